"""Counters of what alerting did in this process, read by the metrics at scrape time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class AlertStats:
    opened: Counter[str] = field(default_factory=Counter)  # by rule kind
    resolved: Counter[str] = field(default_factory=Counter)  # by rule kind
    delivered: int = 0  # notifications a receiver took (2xx)
    failed_attempts: int = 0  # attempts that did not deliver (retried later)
    given_up: int = 0  # deliveries retried for GIVE_UP_AFTER without success
    # Transitions decided but not yet recorded (the database was unavailable).
    pending_transitions: int = 0
