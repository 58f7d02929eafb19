"""Counters the collector keeps about what it took in, for health and metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class IngestStats:
    accepted: Counter[str] = field(default_factory=Counter)  # by kind
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    batches: int = 0
    write_failures: int = 0
    degraded_reason: str | None = None
    # Messages the broker reports it dropped (collector/broker_drops.py), and when last.
    broker_dropped: int = 0
    broker_dropped_at: datetime | None = None
