"""Claim codes: a device registered without credentials fetches them once with its code.

A code carries 120 bits from the OS's random source, printed in groups of a no-look-alike
alphabet for a QR label; the server keeps only its SHA-256. Every failure (unknown, used,
expired) is the same answer, so the answer tells an attacker nothing, and failures are rate
limited per client address.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from paku_iot.exceptions import PakuError

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # 32 symbols: 5 bits each, no 0/O, 1/I
CODE_SYMBOLS = 24  # 120 bits
DEFAULT_TTL_S = 30 * 24 * 3600
MAX_TTL_S = 365 * 24 * 3600


class ClaimRefused(PakuError):
    code = "invalid_claim_code"
    http_status = 403


class TooManyClaims(PakuError):
    code = "too_many_attempts"
    http_status = 429

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed claims; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def new_claim_code() -> str:
    symbols = "".join(secrets.choice(_ALPHABET) for _ in range(CODE_SYMBOLS))
    return "-".join(symbols[i : i + 4] for i in range(0, CODE_SYMBOLS, 4))


def normalize_code(code: str) -> str:
    """Case and separators do not matter: what a person types from a label still works."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


@dataclass
class FailureLimiter:
    """At most `limit` failed claims per address in `window_s` (in this process)."""

    limit: int = 10
    window_s: float = 60.0

    def __post_init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def check(self, address: str) -> None:
        now = time.monotonic()
        recent = self._failures.get(address)
        if not recent:
            return
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.limit:
            raise TooManyClaims(int(recent[0] + self.window_s - now) + 1)

    def failed(self, address: str) -> None:
        self._failures.setdefault(address, deque()).append(time.monotonic())
        if len(self._failures) > 10_000:  # bounded memory under a spray from many addresses
            self._failures.pop(next(iter(self._failures)))


def expiry(ttl_seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ttl_seconds)
