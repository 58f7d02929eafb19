"""What the dashboard's week chart costs (issue 19, docs/performance.md): one device with a
week of one-minute samples (10,080, `{"ts", "temp", "hum", "n"}`) among other devices'
rows, on PostgreSQL; timed: the aggregate of one field in 5-minute buckets with every
function, the chart's key query (which fields are numbers), and the whole week chart (keys,
then an average per field).

    .venv/bin/python -m bench.aggregates
    .venv/bin/python -m bench.aggregates --devices 100
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.common import PG_ADMIN, pg
from paku_iot.storage.engine import create_engine
from paku_iot.storage.exports import ExportStore, Selection, Window
from paku_iot.storage.migrate import upgrade

WEEK = 7 * 24 * 60
END = datetime(2026, 12, 1, tzinfo=UTC)
START = END - timedelta(minutes=WEEK)

_ROWS = """
INSERT INTO telemetry (device_id, ts, received_at, payload)
SELECT 'agg-' || d, $1::timestamptz + m * interval '1 minute', $1::timestamptz,
       jsonb_build_object('ts', m, 'temp', 20 + (m % 50) / 10.0, 'hum', 40 + m % 7, 'n', m)
  FROM generate_series(0, $2::int - 1) AS d, generate_series(0, $3::int - 1) AS m
"""


async def timed(runs: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    await call()  # warm: plans and caches
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.99) - 1 if len(took) > 1 else 0]


async def main(devices: int, runs: int) -> None:
    name = f"paku_bench_{secrets.token_hex(4)}"
    await pg(f"CREATE DATABASE {name}")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(upgrade, url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(_ROWS, START, devices, WEEK)
            await conn.execute("ANALYZE telemetry")
        finally:
            await conn.close()
        engine = create_engine(url)
        store = ExportStore(engine)
        week = Window(START, END)
        one = Selection(device_id="agg-0")

        async def aggregate() -> object:
            return await store.aggregate(
                "agg-0",
                ["temp"],
                width=timedelta(minutes=5),
                start=START,
                end=END,
                functions=["avg", "min", "max", "count", "last"],
            )

        async def keys() -> object:
            return await store.telemetry_keys(one, week, numeric_only=True)

        async def chart() -> object:
            for field in await store.telemetry_keys(one, week, numeric_only=True):
                await store.aggregate(
                    "agg-0",
                    [field],
                    width=timedelta(minutes=5),
                    start=START,
                    end=END,
                    functions=["avg", "count"],
                )
            return None

        buckets = len(await aggregate())  # type: ignore[arg-type]
        print(f"{devices} devices x {WEEK} one-minute samples; {buckets} buckets of 5 min")
        for label, call in (("aggregate, 5 fns", aggregate), ("keys", keys), ("chart", chart)):
            p50, p99 = await timed(runs, call)
            print(f"{label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {runs} runs")
        await engine.dispose()
    finally:
        await pg(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.runs))
