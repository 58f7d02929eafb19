"""Claim codes: a device registered without credentials fetches them once with its code.

A code carries 120 bits from the OS's random source, printed in groups of a no-look-alike
alphabet for a QR label; the server keeps only its SHA-256. Every failure (unknown, used,
expired, or a device that has credentials already) is the same answer, so the answer tells an
attacker nothing, and failures are rate limited per client address, in the database.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import UTC, datetime, timedelta

from paku_iot.exceptions import PakuError
from paku_iot.storage.security import ClaimFailureStore

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


class FailureLimiter:
    """At most `limit` failed claims per client address in `window_s`, counted in the
    database: every API process (replicas, a restart) sees the same failures.

    A check and the failure that follows it are two statements, so requests that race from
    one address can overshoot the limit by how many run at once; that stays a handful, not a
    way around the limit."""

    def __init__(self, store: ClaimFailureStore, *, limit: int = 10, window_s: int = 60) -> None:
        self._store = store
        self.limit = limit
        self.window = timedelta(seconds=window_s)

    async def check(self, address: str) -> None:
        now = datetime.now(UTC)
        count, oldest = await self._store.since(address, now - self.window)
        if count >= self.limit and oldest is not None:
            raise TooManyClaims(max(1, math.ceil((oldest + self.window - now).total_seconds())))

    async def failed(self, address: str) -> None:
        now = datetime.now(UTC)
        await self._store.add(address, now, forget_before=now - self.window)


def expiry(ttl_seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ttl_seconds)
