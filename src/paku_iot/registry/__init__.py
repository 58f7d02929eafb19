"""The device registry: device ids, credentials, and provisioning (`registry.devices`).

This package's `__init__` imports only the leaf modules: the broker layer needs password
hashing, and provisioning needs the broker layer, so `DeviceRegistry` is imported from its
module. The device id rule is part of the wire contract: `paku_iot.protocol`.
"""

from paku_iot.registry.ids import new_device_id
from paku_iot.registry.passwords import hash_password, new_password, verify_password

__all__ = [
    "hash_password",
    "new_device_id",
    "new_password",
    "verify_password",
]
