"""What the downlink needs from the broker connection."""

from __future__ import annotations

from typing import Protocol


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...
