"""A real `paku-iot serve` process (uvicorn, API and collector) on a free port, against the
test's own Mosquitto and database; the `served` fixture (tests/reliability/conftest.py)
starts it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import ADMIN_TOKEN
from tests.support.broker import Broker


@dataclass
class Served:
    base_url: str
    broker: Broker
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-20_000:]
