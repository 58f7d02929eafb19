"""Firmware versions are semantic versions (https://semver.org): 1.4.2, 2.0.0-rc.1.

Releases are published with exactly that. What a device reports running is read by the
contract's rule (`protocol.parse_fw_version`: a leading `v`, git describe's suffixes), the
same for its state's fwVersion and for the manifest's `current`."""

from __future__ import annotations

import semver

from paku_iot.exceptions import InvalidInput
from paku_iot.protocol import FirmwareVersionError, parse_fw_version


def parse_version(text: str, what: str = "version") -> semver.Version:
    """Parse a release's `text` as a semantic version; a leading `v` is not part of one."""
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"{what} {text!r} is not a semantic version (like 1.4.2 or 2.0.0-rc.1)",
            code="invalid_version",
        ) from None


def running_version(reported: str, what: str = "version") -> semver.Version:
    """The version a device says it runs; InvalidInput when no rule reads it."""
    try:
        return parse_fw_version(reported)
    except FirmwareVersionError as exc:
        raise InvalidInput(f"{what} {exc}", code="invalid_version") from None


def running_version_or_none(reported: str | None) -> semver.Version | None:
    """The version in a device's state, or None when it reports none that can be compared."""
    if reported is None:
        return None
    try:
        return parse_fw_version(reported)
    except FirmwareVersionError:
        return None


def newest_first(versions: list[str]) -> list[str]:
    """Sorted by semver precedence, newest first; a pre-release sorts below its release."""
    return sorted(versions, key=semver.Version.parse, reverse=True)
