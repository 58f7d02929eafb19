"""The database goes away in the middle of a stream and comes back: PostgreSQL stopped (the
tests' own cluster, `pg_ctl stop -m fast`), or the SQLite file locked by another connection
(`BEGIN EXCLUSIVE`) for longer than the collector's busy timeout.

Meanwhile the collector keeps acknowledging what is durable in its spool (issue 17), and the
spool, not the broker, holds the backlog; it retries with backoff; `/health` says it is
degraded; and once the database is back it recovers by itself with nothing lost. With
`kill_during` the collector is also SIGKILLed during the outage: had it acknowledged anything
it had not spooled, that would be lost.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import eventually
from tests.support.faults import (
    Deployment,
    Fleet,
    MakeDeployment,
    PrivateCluster,
    check_exactly_once,
)


@dataclass
class Outage:
    """How to take the database away and give it back."""

    name: str
    begin: Callable[[], Awaitable[None]]
    end: Callable[[], Awaitable[None]]


def postgres_outage(cluster: PrivateCluster) -> Outage:
    async def begin() -> None:
        await asyncio.to_thread(cluster.stop, "fast")

    async def end() -> None:
        await asyncio.to_thread(cluster.start)

    return Outage("PostgreSQL stopped", begin, end)


def sqlite_lock(path: Path) -> Outage:
    """Another connection holds the write lock (in its own thread) until `end`."""
    release = threading.Event()
    holding = threading.Event()
    thread: list[threading.Thread] = []

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            holding.set()
            release.wait(120)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    async def begin() -> None:
        thread.append(threading.Thread(target=hold, daemon=True))
        thread[0].start()
        assert await asyncio.to_thread(holding.wait, 10), "could not lock the database"

    async def end() -> None:
        release.set()
        await asyncio.to_thread(thread[0].join, 10)

    return Outage("SQLite locked", begin, end)


async def metric(deployment: Deployment, name: str) -> float:
    async with deployment.client() as client:
        text = (await client.get("/metrics")).text
    found = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"no {name} in /metrics"
    return float(found.group(1))


async def outage_mid_stream(
    deployment: Deployment,
    outage: Outage,
    *,
    outage_s: float,
    devices: int,
    per_device: int,
    rate: float,
    kill_during: bool = False,
) -> dict[str, float]:
    serve = deployment.process("all").start()
    await deployment.wait_healthy()
    fleet = Fleet(
        deployment.broker.host, deployment.broker.port, await deployment.provision(devices)
    )
    try:
        await fleet.connect()
        await fleet.wait_for_subscriber()
        total = devices * per_device
        # The devices publish at least `per_device` each, and on until the outage is over.
        over = threading.Event()
        stream = asyncio.create_task(asyncio.to_thread(fleet.stream, per_device, rate, until=over))
        while await deployment.stored_count() < total / 4:
            assert not stream.done(), "the stream ended before the outage"
            await asyncio.sleep(0.05)
        failures_before = await metric(deployment, "paku_ingest_write_failures")
        await outage.begin()
        began = time.monotonic()
        health_seen: list[tuple[int, dict[str, object]]] = []

        async def degraded() -> None:
            code, body = await deployment.health()
            health_seen.append((code, body))
            assert body["components"]["collector"] == "degraded", body  # type: ignore[index]

        await eventually(degraded, timeout=outage_s + 10)
        degraded_after = time.monotonic() - began
        assert degraded_after < outage_s, f"degraded only after {degraded_after:.1f} s"
        code, body = health_seen[-1]
        assert body["status"] in ("degraded", "unavailable"), body
        assert code == (503 if body["status"] == "unavailable" else 200)
        assert "database unavailable" in body["details"]["collector"]  # type: ignore[index]
        if kill_during:
            serve.kill()
        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - began)))
        await outage.end()
        ended = time.monotonic()
        if kill_during:
            serve.start()
        over.set()
        await stream
        await fleet.wait_answered(timeout=120)
        acked = fleet.acked()
        assert len(acked) == fleet.published, fleet.codes()

        async def all_stored() -> None:
            count = await deployment.stored_count()
            assert count >= len(acked), f"{count} of {len(acked)} stored"

        try:
            # The spool drains at the writer's pace: a long outage's backlog takes a while.
            await eventually(all_stored, timeout=max(60.0, len(acked) / 2000))
            await deployment.wait_healthy(timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{deployment.logs()}") from None
        recovered_after = time.monotonic() - ended
        check_exactly_once(acked, fleet.sent(), await deployment.stored_keys())
        assert await deployment.rejected() == []  # an outage is not bad input
        result = {
            "messages": len(acked),
            "degraded_after_s": degraded_after,
            "recovered_after_s": recovered_after,
        }
        if not kill_during:
            # Backoff: 0.1 s doubling to 5 s is a handful of attempts, not one per 0.1 s.
            failures = await metric(deployment, "paku_ingest_write_failures") - failures_before
            assert 1 <= failures <= 8 + outage_s / 5, f"{failures} failed writes"
            result["failed_writes"] = failures
        assert not (errors := serve.unexpected_errors()), "\n".join(errors)
        print(f"{outage.name} {outage_s:g} s: {result}")
        return result
    finally:
        fleet.close()


@pytest.mark.timeout(180)
async def test_postgresql_stopping_mid_stream_loses_nothing(
    make_deployment: MakeDeployment, private_pg: PrivateCluster, private_pg_url: str
) -> None:
    await outage_mid_stream(
        make_deployment(private_pg_url),
        postgres_outage(private_pg),
        outage_s=3,
        devices=10,
        per_device=300,
        rate=600,
    )


@pytest.mark.timeout(180)
async def test_a_collector_killed_while_postgresql_is_down_loses_nothing(
    make_deployment: MakeDeployment, private_pg: PrivateCluster, private_pg_url: str
) -> None:
    await outage_mid_stream(
        make_deployment(private_pg_url),
        postgres_outage(private_pg),
        outage_s=3,
        devices=10,
        per_device=300,
        rate=600,
        kill_during=True,
    )


@pytest.mark.timeout(180)
async def test_a_locked_sqlite_database_mid_stream_loses_nothing(
    make_deployment: MakeDeployment, sqlite_db: Path
) -> None:
    # Longer than the collector's 5 s busy timeout, so its writes fail and are retried.
    await outage_mid_stream(
        make_deployment(f"sqlite:///{sqlite_db}"),
        sqlite_lock(sqlite_db),
        outage_s=7,
        devices=10,
        per_device=500,
        rate=500,
    )


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_soak_postgresql_down_for_10s(
    make_deployment: MakeDeployment, private_pg: PrivateCluster, private_pg_url: str
) -> None:
    await outage_mid_stream(
        make_deployment(private_pg_url),
        postgres_outage(private_pg),
        outage_s=10,
        devices=100,
        per_device=200,
        rate=1000,
    )


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_soak_postgresql_down_for_10s_with_the_collector_killed(
    make_deployment: MakeDeployment, private_pg: PrivateCluster, private_pg_url: str
) -> None:
    await outage_mid_stream(
        make_deployment(private_pg_url),
        postgres_outage(private_pg),
        outage_s=10,
        devices=100,
        per_device=200,
        rate=1000,
        kill_during=True,
    )


@pytest.mark.soak
@pytest.mark.timeout(1500)
async def test_soak_postgresql_down_for_5_minutes_at_2k_msgs_per_s(
    make_deployment: MakeDeployment, private_pg: PrivateCluster, private_pg_url: str
) -> None:
    """Issue 17: 600,000 messages arrive while the database is away. Before the spool they
    stayed in the broker's queue for the collector, past its 100,000 limit they were dropped
    after the broker had acknowledged them; now the spool holds them and drains them after."""
    result = await outage_mid_stream(
        make_deployment(private_pg_url),
        postgres_outage(private_pg),
        outage_s=300,
        devices=100,
        per_device=1000,
        rate=2000,
    )
    assert result["messages"] > 600_000


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_soak_sqlite_locked_for_20s(make_deployment: MakeDeployment, sqlite_db: Path) -> None:
    await outage_mid_stream(
        make_deployment(f"sqlite:///{sqlite_db}"),
        sqlite_lock(sqlite_db),
        outage_s=20,
        devices=100,
        per_device=300,
        rate=1000,
    )
