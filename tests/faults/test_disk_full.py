"""The disk holding the database fills up mid-stream: the data dir with SQLite, or
PostgreSQL's data directory. Ingest stops cleanly (the collector retries, acknowledges nothing
it could not store, `/health` says degraded, nothing is set aside as bad input, the database
stays intact), and once space returns every message the broker acknowledged is stored
exactly once.

The disk is a small tmpfs mounted for the test (root, as in CI)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from paku_iot.storage.migrate import upgrade
from tests.support import eventually
from tests.support.faults import (
    Fleet,
    MakeDeployment,
    PrivateCluster,
    SmallDisk,
    check_exactly_once,
    sqlite_url,
)


def integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_full_disk_stops_ingest_cleanly_and_it_resumes_when_space_returns(
    make_deployment: MakeDeployment,
    small_disk: SmallDisk,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    database: Path | None = None
    if kind == "sqlite":
        data_dir = small_disk.path / "data"
        database = data_dir / "paku.db"
        url = await asyncio.to_thread(sqlite_url, database)
        deployment = make_deployment(url, data_dir=data_dir)
        # The disk of the database fills, not the spool's: a full spool disk stops intake
        # until a restart (docs/operations.md), which is not what this test is about.
        deployment.extra_env["PAKU_SPOOL_DIR"] = str(deployment.root / "spool")
    else:
        cluster: PrivateCluster = request.getfixturevalue("pg_on_small_disk")
        url = await cluster.create_database()
        await asyncio.to_thread(upgrade, url)
        deployment = make_deployment(url)
    serve = deployment.process("all").start()
    await deployment.wait_healthy()
    fleet = Fleet(deployment.broker.host, deployment.broker.port, await deployment.provision(10))
    try:
        await fleet.connect()
        await fleet.wait_for_subscriber()

        # Before: the disk has room.
        await asyncio.to_thread(fleet.stream, 100, 2000)
        await fleet.wait_answered()

        async def stored(expected: int) -> None:
            count = await deployment.stored_count()
            assert count >= expected, f"{count} of {expected} stored"

        await eventually(lambda: stored(fleet.published))

        # The disk fills up; devices keep sending.
        filler = await asyncio.to_thread(small_disk.fill)
        assert small_disk.free_bytes() == 0
        stream = asyncio.create_task(asyncio.to_thread(fleet.stream, 300, 1000))

        async def degraded() -> None:
            code, body = await deployment.health()
            assert code == 200, body  # the API still answers
            assert body["components"]["collector"] == "degraded", body
            assert body["details"]["collector"].startswith("database unavailable"), body

        try:
            await eventually(degraded, timeout=15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{deployment.logs()}") from None
        await stream
        await fleet.wait_answered()  # the broker took them all; the collector has not
        stuck_at = await deployment.stored_count()
        await asyncio.sleep(2)
        assert await deployment.stored_count() == stuck_at < fleet.published
        assert await deployment.rejected() == []  # nothing was taken for bad input
        if database is not None:
            assert await asyncio.to_thread(integrity, database) == "ok"

        # Space returns: ingest resumes by itself with everything the broker kept.
        filler.unlink()
        resumed = time.monotonic()
        acked = fleet.acked()
        assert len(acked) == fleet.published, fleet.codes()
        try:
            await eventually(lambda: stored(len(acked)), timeout=60)
            await deployment.wait_healthy(timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{deployment.logs()}") from None
        print(
            f"disk full ({kind}): {fleet.published - stuck_at} messages held while full, "
            f"all stored {time.monotonic() - resumed:.1f} s after space returned"
        )
        check_exactly_once(acked, fleet.sent(), await deployment.stored_keys())
        assert await deployment.rejected() == []
        if database is not None:
            assert await asyncio.to_thread(integrity, database) == "ok"
        assert not (errors := serve.unexpected_errors()), "\n".join(errors)
    finally:
        fleet.close()
