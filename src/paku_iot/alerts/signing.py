"""The webhook signature (docs/alerts.md): `X-Paku-Signature: t=<unix seconds>,v1=<hex>`,
the HMAC-SHA256 with the destination's secret of `<t>.` followed by the raw body.

The time is signed with the body so a receiver can refuse a replay of an old request; it is
the time of the attempt, not of the alert, so a retry after an outage still verifies. The
example receiver in docs/alerts.md uses this same algorithm.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Paku-Signature"
SCHEME = "v1"
TOLERANCE_S = 300


def sign(secret: str, body: bytes, t: int) -> str:
    """The hex HMAC-SHA256 of `<t>.<body>`."""
    message = f"{t}.".encode("ascii") + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, t: int) -> str:
    return f"t={t},{SCHEME}={sign(secret, body, t)}"


def verify(
    header: str, secret: str, body: bytes, now: float, tolerance_s: float = TOLERANCE_S
) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance_s` of `now`
    (unix seconds). Several `v1=` entries are allowed (any may match: a sender rotating its
    secret can sign with both); anything malformed is simply not verified."""
    t: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if not (value.isascii() and value.isdigit()):  # no sign, space, fraction
                return False
            t = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if t is None or not signatures or abs(now - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).encode("ascii")
    # compare_digest on bytes (on str it raises for non-ASCII): the time taken tells
    # nothing of how much of a candidate matched.
    return any(hmac.compare_digest(expected, c.encode("utf-8")) for c in signatures)
