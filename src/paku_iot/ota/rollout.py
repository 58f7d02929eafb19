"""Staged rollouts: which devices a release at N percent is offered to.

Each device id maps to a fixed bucket in 0..9999 (from SHA-256 of the id); a release at N%
includes the devices whose bucket is below N*100. The bucket never changes, so raising the
percentage only ever adds devices, and 100% is everyone.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(device_id: str) -> int:
    digest = hashlib.sha256(device_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_rollout(device_id: str, percent: int) -> bool:
    return bucket(device_id) < percent * (BUCKETS // 100)
