"""Device ids: they become MQTT usernames and topic levels, so they must be safe in both."""

from __future__ import annotations

import re
import secrets

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{3,64}$"
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
_GENERATED_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no look-alikes for printed labels


def is_valid_device_id(value: str) -> bool:
    """3-64 characters of `[A-Za-z0-9_-]`: never an MQTT wildcard, separator or `$`."""
    return _DEVICE_ID_RE.fullmatch(value) is not None


def new_device_id() -> str:
    """A random id such as `d-7kq2m9xw4hpa` (12 characters, 60 bits)."""
    return "d-" + "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(12))
