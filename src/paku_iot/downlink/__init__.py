"""Downlink: commands with honest delivery status, and desired configuration."""

from paku_iot.downlink.commands import CommandService, NewCommand
from paku_iot.downlink.config import ConfigService, ConfigView
from paku_iot.downlink.publisher import Publisher

__all__ = ["CommandService", "ConfigService", "ConfigView", "NewCommand", "Publisher"]
