"""Firmware versions are semantic versions (https://semver.org): 1.4.2, 2.0.0-rc.1."""

from __future__ import annotations

import semver

from paku_iot.exceptions import InvalidInput


def parse_version(text: str, what: str = "version") -> semver.Version:
    """Parse `text` as a semantic version; a leading `v` is not part of one."""
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"{what} {text!r} is not a semantic version (like 1.4.2 or 2.0.0-rc.1)",
            code="invalid_version",
        ) from None


def newest_first(versions: list[str]) -> list[str]:
    """Sorted by semver precedence, newest first; a pre-release sorts below its release."""
    return sorted(versions, key=semver.Version.parse, reverse=True)
