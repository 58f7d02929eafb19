"""Tags at 10,000 devices (issue 19, docs/performance.md): `GET /devices?tag=...&limit=100`
timed on SQLite and PostgreSQL.

10,000 devices are inserted straight through the device store (provisioning each through
the API would time password hashing, not tags), then tagged: every device `fleet`, 100
devices per `site-NN` (100 sites), 10 devices `rare`, and every fourth device one of 4
`model-like` tags, so each device has 2-3 tags and the table 22,500 rows. Each listing is
the app in process (httpx's ASGI transport: routing, auth, the query, JSON; no socket),
`REQUESTS` times after a warm-up, and reports p50/p99 in ms:

- no filter (the baseline), first page;
- `tag=fleet` (every device), first page, and a page from the middle (keyset cursor);
- `tag=site-42` (100 devices, 1%), `tag=rare` (10 devices);
- `tag=site-42&online=false&model=bench` (tag combined with the other filters).

    .venv/bin/python -m bench.tags
    .venv/bin/python -m bench.tags --db sqlite --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import stack
from paku_iot.server.service import Role, running_service
from paku_iot.storage.records import NewDevice
from paku_iot.web.api.cursors import encode_cursor
from paku_iot.web.app import create_app

DEVICES = 10_000
REQUESTS = 300


async def seed(service: Any) -> list[str]:
    store = service.device_store
    ids = [f"dev-{n:05d}" for n in range(DEVICES)]
    now = datetime.now(UTC)
    for start in range(0, DEVICES, 1000):
        # A well-formed `$7$` hash is not needed: nothing connects.
        await store.insert_many(
            [NewDevice(d, "bench", None, {}, now, None) for d in ids[start : start + 1000]]
        )
    await store.change_tags(ids, add=["fleet"], remove=[], max_tags=20)
    for site in range(100):
        await store.change_tags(ids[site::100], add=[f"site-{site:02d}"], remove=[], max_tags=20)
    await store.change_tags(ids[::1000], add=["rare"], remove=[], max_tags=20)
    for kind in range(4):
        await store.change_tags(ids[kind::16], add=[f"kind-{kind}"], remove=[], max_tags=20)
    return ids


async def timed(api: httpx.AsyncClient, params: dict[str, Any], requests: int) -> dict[str, Any]:
    for _ in range(20):
        (await api.get("/devices", params=params)).raise_for_status()
    samples: list[float] = []
    items = 0
    for _ in range(requests):
        started = time.perf_counter()
        response = await api.get("/devices", params=params)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        items = len(response.json()["items"])
    samples.sort()
    return {
        "items": items,
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
    }


async def run(db: str, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="paku-bench-tags-") as tmp:
        async with (
            stack(db, Path(tmp)) as bench_stack,
            running_service(bench_stack.settings, frozenset({Role.API})) as service,
        ):
            started = time.perf_counter()
            ids = await seed(service)
            seeded = time.perf_counter() - started
            token = bench_stack.settings.admin_token
            assert token is not None
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(service)),
                base_url="http://paku.bench",
                headers={"Authorization": f"Bearer {token}"},
            ) as api:
                cases = {
                    "no filter": {},
                    "tag=fleet (10,000)": {"tag": "fleet"},
                    "tag=fleet, middle page": {"tag": "fleet", "cursor": encode_cursor(ids[5000])},
                    "tag=site-42 (100)": {"tag": "site-42"},
                    "tag=rare (10)": {"tag": "rare"},
                    "tag=site-42&online=false&model=bench": {
                        "tag": "site-42",
                        "online": "false",
                        "model": "bench",
                    },
                }
                results = {
                    name: await timed(api, {"limit": 100, **params}, requests)
                    for name, params in cases.items()
                }
    return {"db": db, "devices": DEVICES, "seed_seconds": round(seeded, 1), "reads": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    args = parser.parse_args()
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for db in dbs:
        print(json.dumps(asyncio.run(run(db, args.requests)), indent=2), flush=True)


if __name__ == "__main__":
    main()
