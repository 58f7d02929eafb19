"""Everything about the MQTT broker: topics, generated files, credentials sync, our client."""

from paku_iot.broker.credentials import PasswordFileSync
from paku_iot.broker.files import BrokerOptions, BrokerPaths, write_broker_files
from paku_iot.broker.link import BrokerLink, LinkOptions
from paku_iot.broker.reload import reload_broker

__all__ = [
    "BrokerLink",
    "BrokerOptions",
    "BrokerPaths",
    "LinkOptions",
    "PasswordFileSync",
    "reload_broker",
    "write_broker_files",
]
