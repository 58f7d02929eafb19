"""Device sample times: epoch milliseconds or RFC 3339 strings."""

from __future__ import annotations

import math
from datetime import UTC, datetime

# A device clock outside these years is not set (an ESP32 before NTP counts from 1970):
# storing such a sample would file it under the wrong day, so it is rejected with a reason.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class TimestampError(ValueError):
    pass


def parse_device_ts(value: object) -> datetime:
    if isinstance(value, bool):
        raise TimestampError("ts must be epoch milliseconds or an RFC 3339 string, not a boolean")
    if isinstance(value, (int, float)):  # a tuple: faster than int | float on this hot path
        # isnan on an int converts it to a float, which overflows for a huge one.
        if isinstance(value, float) and math.isnan(value):
            raise TimestampError("ts is not a number")
        try:
            ts = datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise TimestampError(f"ts {value!r} is out of range") from None
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise TimestampError(f"ts {value[:64]!r} is not an RFC 3339 time") from None
        if ts.tzinfo is None:
            raise TimestampError("ts must carry a time zone (Z or +hh:mm)")
        ts = ts.astimezone(UTC)
    else:
        raise TimestampError("ts must be epoch milliseconds or an RFC 3339 string")
    if not _EARLIEST <= ts < _LATEST:
        raise TimestampError(f"ts {ts.isoformat()} is outside 2000-2199: is the clock set?")
    return ts
