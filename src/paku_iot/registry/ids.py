"""Generated device ids. The rule every id follows (`is_valid_device_id`) is part of the wire
contract and lives in paku_iot.protocol; an id made here always satisfies it."""

from __future__ import annotations

import secrets

_GENERATED_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no look-alikes for printed labels


def new_device_id() -> str:
    """A random id such as `d-7kq2m9xw4hpa` (12 characters, 60 bits)."""
    return "d-" + "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(12))
