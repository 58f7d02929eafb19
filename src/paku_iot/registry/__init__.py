"""The device registry: device ids, credentials and the provisioning service."""

from paku_iot.registry.devices import DeviceRegistry, ProvisionedDevice
from paku_iot.registry.ids import is_valid_device_id, new_device_id
from paku_iot.registry.passwords import hash_password, new_password, verify_password

__all__ = [
    "DeviceRegistry",
    "ProvisionedDevice",
    "hash_password",
    "is_valid_device_id",
    "new_device_id",
    "new_password",
    "verify_password",
]
