"""An export streams: a real `paku-iot serve` exports hundreds of thousands of rows (a million
in `make soak`) while its resident memory, sampled from /proc, stays under 150 MB.

The rows are made by the database itself (PostgreSQL's generate_series, a recursive CTE on
SQLite), so the test spends its time on the export, not on inserting."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.broker import Broker
from tests.support.served import Served, serve

RSS_LIMIT_MB = 150
T0 = datetime(2026, 1, 1, tzinfo=UTC)

_PG_ROWS = """
INSERT INTO telemetry (device_id, ts, received_at, payload)
SELECT 'mem-1', $1::timestamptz + n * interval '1 second', $1::timestamptz,
       jsonb_build_object('temp', n % 100, 'boiler', jsonb_build_object('temp', n % 7), 'n', n)
  FROM generate_series(0, $2::int - 1) AS n
"""
# SQLite keeps times as naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff' (storage/types.py).
_SQLITE_ROWS = """
WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < ? - 1)
INSERT INTO telemetry (device_id, ts, received_at, payload)
SELECT 'mem-1', strftime('%Y-%m-%d %H:%M:%S', ? + n, 'unixepoch') || '.000000',
       '2026-01-01 00:00:00.000000',
       json_object('temp', n % 100, 'boiler', json_object('temp', n % 7), 'n', n)
  FROM s
"""


async def insert_rows(database_url: str, rows: int) -> None:
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute(_SQLITE_ROWS, (rows, int(T0.timestamp())))
        return
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(_PG_ROWS, T0, rows)
    finally:
        await conn.close()


@dataclass
class RssSampler:
    pid: int
    peak_kb: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def read_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.read_kb())
            self.samples += 1
            self._stop.wait(0.02)


@contextmanager
def sampling(pid: int) -> Iterator[RssSampler]:
    sampler = RssSampler(pid)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler._stop.set()
        thread.join()


def export(served: Served, rows: int, fmt: str) -> tuple[int, int, str, float]:
    """Streams the export; returns (lines, peak RSS in MB, the last line, seconds)."""
    started = time.monotonic()
    lines = 0
    last = b""
    tail = b""
    with (
        sampling(served.process.pid) as sampler,
        httpx.stream(
            "GET",
            f"{served.base_url}/devices/mem-1/telemetry",
            params={"format": fmt},
            headers=served.admin_headers,
            timeout=600,
        ) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_bytes(1 << 16):
            lines += chunk.count(b"\n")
            tail = (tail + chunk)[-400:]
    last = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    assert sampler.samples > 10
    return lines, sampler.peak_kb // 1024, last.decode(), time.monotonic() - started


def run_export(tmp_path: Path, database_url: str, broker: Broker, rows: int) -> None:
    asyncio.run(insert_rows(database_url, rows))
    with serve(tmp_path, database_url, broker) as served:
        created = httpx.post(
            f"{served.base_url}/devices",
            json={"model": "m", "id": "mem-1"},
            headers=served.admin_headers,
        )
        assert created.status_code == 201, created.text
        before_mb = RssSampler(served.process.pid).read_kb() // 1024
        lines, peak_mb, last, seconds = export(served, rows, "csv")
        print(
            f"\n{rows} rows as CSV: RSS {before_mb} MB before, peak {peak_mb} MB, {seconds:.1f} s"
        )
        assert lines == rows + 1  # the header, then one line a row
        final = rows - 1
        assert last.split(",")[:5] == [
            datetime.fromtimestamp(T0.timestamp() + final, UTC).isoformat().replace("+00:00", "Z"),
            "mem-1",
            str(final % 7),
            str(final),
            str(final % 100),
        ]
        assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb} MB while exporting {rows} rows"
        lines, peak_mb, _, seconds = export(served, rows, "ndjson")
        print(f"{rows} rows as NDJSON: peak RSS {peak_mb} MB, {seconds:.1f} s")
        assert lines == rows
        assert peak_mb < RSS_LIMIT_MB


@pytest.mark.timeout(300)
def test_200k_rows_stream_in_constant_memory(
    tmp_path: Path, database_url: str, broker: Broker
) -> None:
    run_export(tmp_path, database_url, broker, 200_000)


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_million_rows_stream_in_constant_memory(
    tmp_path: Path, database_url: str, broker: Broker
) -> None:
    run_export(tmp_path, database_url, broker, 1_000_000)
