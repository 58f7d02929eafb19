"""The collector spool on this machine's disk (docs/performance.md, "Spool (issue 17)").

Append + sync: batches of 100 and 1000 collector records of about 200 bytes (encode_message
of a telemetry topic and JSON payload), each batch appended and then made durable with one
fdatasync, by `sync()` (on the calling thread) and by `await sync_async()` (in a worker
thread). Read + commit: the records read back in batches of 1000, each batch's cursor
committed (`commit()` and `await commit_async()`), segments deleted as they are consumed;
and read alone, one commit at the end.

    .venv/bin/python -m bench.spool                  # in a temp dir (on / here)
    .venv/bin/python -m bench.spool --dir /var/tmp --records 300000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from paku_iot.collector.spool import Spool, encode_message

MAX_BYTES = 4 * 1024**3


def records(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        payload = json.dumps(
            {"ts": 1_780_000_000_000 + i, "temp": 21.5, "hum": 40, "seq": i, "pad": "x" * 90}
        ).encode()
        out.append(encode_message(f"paku/dev-{i % 100:04d}/telemetry", payload, False, i))
    return out


def summary(count: int, elapsed: float, nbytes: int, waits: list[float]) -> dict[str, Any]:
    waits_ms = sorted(w * 1000 for w in waits)
    return {
        "records": count,
        "records_per_s": round(count / elapsed),
        "MB_per_s": round(nbytes / elapsed / 1e6, 1),
        "batch_ms_p50": round(statistics.median(waits_ms), 2),
        "batch_ms_p99": round(waits_ms[int(len(waits_ms) * 0.99) - 1], 2),
    }


def append_sync(directory: Path, data: list[bytes], batch: int) -> dict[str, Any]:
    with Spool.open(directory, max_bytes=MAX_BYTES) as spool:
        waits = []
        started = time.perf_counter()
        for first in range(0, len(data), batch):
            t0 = time.perf_counter()
            spool.append(data[first : first + batch])
            spool.sync()
            waits.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    return summary(len(data), elapsed, sum(map(len, data)), waits)


async def append_sync_async(directory: Path, data: list[bytes], batch: int) -> dict[str, Any]:
    with Spool.open(directory, max_bytes=MAX_BYTES) as spool:
        waits = []
        started = time.perf_counter()
        for first in range(0, len(data), batch):
            t0 = time.perf_counter()
            spool.append(data[first : first + batch])
            await spool.sync_async()
            waits.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    return summary(len(data), elapsed, sum(map(len, data)), waits)


async def read_commit(directory: Path, batch: int, *, use_async: bool | None) -> dict[str, Any]:
    """use_async None: read only, one commit at the end (the cost of reading alone)."""
    with Spool.open(directory, max_bytes=MAX_BYTES, segment_bytes=8 * 1024**2) as spool:
        waits = []
        count = nbytes = 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            items = spool.read(batch)
            if not items:
                break
            last = items[-1][0]
            if use_async:
                await spool.commit_async(last)
            elif use_async is False:
                spool.commit(last)
            waits.append(time.perf_counter() - t0)
            count += len(items)
            nbytes += sum(len(body) for _, body in items)
        if use_async is None:
            spool.commit(last)
        elapsed = time.perf_counter() - started
        assert spool.pending_records == 0
    return summary(count, elapsed, nbytes, waits)


def fill(directory: Path, data: list[bytes]) -> None:
    # 8 MiB segments, so that reading also deletes a few dozen consumed segments.
    with Spool.open(directory, max_bytes=MAX_BYTES, segment_bytes=8 * 1024**2) as spool:
        for first in range(0, len(data), 1000):
            spool.append(data[first : first + 1000])
        spool.sync()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp spool dir")
    parser.add_argument("--records", type=int, default=200_000, help="records per run")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="paku-spool-bench-", dir=args.dir))
    try:
        data = records(args.records)
        small = data[: args.records // 4]  # batches of 100 are slower: fewer records
        results: dict[str, Any] = {
            "dir": str(base),
            "record_bytes": round(statistics.mean(map(len, data))),
        }
        for name, batch, subset in (("100", 100, small), ("1000", 1000, data)):
            results[f"append+sync batch {name}"] = append_sync(base / f"s{name}", subset, batch)
            results[f"append+sync_async batch {name}"] = await append_sync_async(
                base / f"a{name}", subset, batch
            )
        fill(base / "r", data)
        results["read+commit batch 1000"] = await read_commit(base / "r", 1000, use_async=False)
        fill(base / "ra", data)
        results["read+commit_async batch 1000"] = await read_commit(
            base / "ra", 1000, use_async=True
        )
        fill(base / "ro", data)
        results["read only batch 1000"] = await read_commit(base / "ro", 1000, use_async=None)
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
