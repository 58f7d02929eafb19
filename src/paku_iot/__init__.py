"""paku-iot: the backend that connects and manages paku devices.

The public surface is small on purpose: settings, the service composition root and the
exception tree. Everything else is reached through the CLI (`paku-iot`) or the HTTP API.
"""

from paku_iot.exceptions import (
    Conflict,
    InvalidInput,
    NotFound,
    PakuError,
    SettingsError,
    Unauthorized,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "Conflict",
    "InvalidInput",
    "NotFound",
    "PakuError",
    "SettingsError",
    "Unauthorized",
    "Unavailable",
    "__version__",
]
