"""The benchmark scenarios. Each returns a flat dict of results; `bench.__main__` runs them
and writes the report."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from gmqtt import Client
from sqlalchemy import func, select

from bench.common import (
    Stack,
    cpu_seconds,
    free_port,
    provision,
    pss_mib,
    rss_mib,
    run_loadgen,
    stack,
)
from paku_iot.alerts.rules import DestinationSpec, RuleSpec
from paku_iot.broker.files import BrokerPaths
from paku_iot.collector.parse import Parsed
from paku_iot.collector.writer import BatchWriter
from paku_iot.server.service import Role, running_service
from paku_iot.settings import BACKEND_MQTT_USERNAME
from paku_iot.storage import schema
from paku_iot.storage.engine import create_engine
from paku_iot.storage.partitions import ensure_partitions
from paku_iot.storage.records import TelemetryRecord


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class PeakMemory:
    """Samples the PSS of some processes every half second; keeps each one's peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], pss_mib(pid))
            await asyncio.sleep(0.5)

    def __enter__(self) -> PeakMemory:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


class CommitClock:
    """Publish-to-commit latency of every telemetry message the in-process collector stores.

    Every message reaches the database through `BatchWriter.offer(record, token)` and comes
    back, once its batch has committed, in the token list `BatchWriter.run` hands to its
    `on_committed` callback (a PUBACK token, or with the spool a spool position). The clock
    wraps both on the class, for the writers made while it is installed (`with
    CommitClock() as clock:` around `running_service`): `record.ts` is the publish time, the
    callback's moment the commit time. Production code has no hook for this: the bench
    instruments from outside.
    """

    def __init__(self) -> None:
        self.latencies = array("d")  # a million samples in 8 MB, not 32
        self.committed = 0
        self.first_publish = float("inf")
        self.last_commit = 0.0
        self._published_at: dict[Any, float] = {}
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> CommitClock:
        offer, run = BatchWriter.offer, BatchWriter.run
        self._saved = (offer, run)
        clock = self

        def offer_noting_publish(writer: BatchWriter[Any], record: Parsed, token: Any) -> None:
            if token is not None and isinstance(record, TelemetryRecord):
                clock._published_at[token] = record.ts.timestamp()
            offer(writer, record, token)

        async def run_noting_commits(
            writer: BatchWriter[Any], on_committed: Callable[[list[Any]], None], *args: Any
        ) -> None:
            def noting(tokens: list[Any]) -> None:
                clock._committed(tokens, time.time())
                on_committed(tokens)

            await run(writer, noting, *args)

        BatchWriter.offer = offer_noting_publish  # type: ignore[method-assign,assignment]
        BatchWriter.run = run_noting_commits  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._saved is not None
        BatchWriter.offer, BatchWriter.run = self._saved  # type: ignore[method-assign]

    @asynccontextmanager
    async def installed(self) -> AsyncIterator[CommitClock]:
        """The same as `with clock:`, to go in one `async with` beside the service."""
        with self:
            yield self

    def _committed(self, tokens: list[Any], at: float) -> None:
        published_at = self._published_at
        sent = [published_at.pop(token) for token in tokens if token in published_at]
        if not sent:
            return
        self.committed += len(sent)
        self.first_publish = min(self.first_publish, *sent)
        self.last_commit = at
        self.latencies.extend(at - t for t in sent)


async def _stored(stack: Stack) -> tuple[int, int]:
    """(rows, distinct (device, ts) pairs) in telemetry."""
    engine = create_engine(stack.url)
    try:
        async with engine.connect() as conn:
            t = schema.telemetry
            rows = (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            pairs = select(t.c.device_id, t.c.ts).distinct().subquery()
            distinct = (await conn.execute(select(func.count()).select_from(pairs))).scalar_one()
            return int(rows), int(distinct)
    finally:
        await engine.dispose()


def alert_rule_specs(count: int) -> list[RuleSpec]:
    """`count` rules as a fleet might have them, none of which the load generator's samples
    (temp 21.5, hum 40) cross: the cost measured is evaluation, not notification. Mixed
    kinds and scopes: thresholds on both fields for every device, per model and per device,
    offline rules, rejected rates and failed updates."""
    hook = (DestinationSpec("webhook", "http://127.0.0.1:9/hook"),)
    specs: list[RuleSpec] = []
    for n in range(count):
        field, limit = ("temp", 60 + n) if n % 2 else ("hum", 90 + n % 10)
        scope = {0: {}, 1: {"model": "bench"}, 2: {"device_id": f"b-{n % 100:05d}"}}[n % 3]
        if n % 10 == 7:
            specs.append(RuleSpec(f"quiet {n}", "offline", silence_seconds=3600, destinations=hook))
        elif n % 10 == 8:
            specs.append(
                RuleSpec(f"rejects {n}", "rejected_rate", per_minute=100, destinations=hook)
            )
        elif n % 10 == 9:
            specs.append(RuleSpec(f"ota {n}", "ota_failed", destinations=hook))
        else:
            specs.append(
                RuleSpec(
                    f"high {n}", "threshold", field=field, above=limit, destinations=hook, **scope
                )
            )
    return specs


async def ingest(
    db: str, work: Path, devices: int, rate: float, duration: float, alert_rules: int = 0
) -> dict[str, Any]:
    """paku-iot's collector (in this process) under the load generator: persisted rate,
    publish-to-commit latency of every message, CPU and memory. With `alert_rules`, that
    many rules are evaluated against every committed batch."""
    async with stack(db, work) as st:
        creds = await provision(st.settings, devices, "b-", work / "creds.json")
        if alert_rules:
            async with running_service(st.settings, frozenset({Role.API})) as service:
                for spec in alert_rule_specs(alert_rules):
                    await service.alert_rules.create(spec)
        clock = CommitClock()
        async with (
            clock.installed(),
            running_service(st.settings, frozenset({Role.COLLECTOR})) as service,
        ):
            while not service.link.ready:
                await asyncio.sleep(0.05)
            args = ["--duration", str(duration), "--rate", str(rate)]
            cpu0, broker_cpu0 = time.process_time(), cpu_seconds(st.broker.pid)
            with PeakMemory({"collector": _self_pid(), "mosquitto": st.broker.pid}) as memory:
                load = await run_loadgen(st, creds, *args)
                deadline = time.monotonic() + 120
                while clock.committed < load["acked"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            cpu = time.process_time() - cpu0
            broker_cpu = cpu_seconds(st.broker.pid) - broker_cpu0
        rows, distinct = await _stored(st)
    # From the first message's publish (its `ts`) to the commit of the last one.
    publishing = max(1e-9, clock.last_commit - clock.first_publish)
    latencies, committed = clock.latencies, clock.committed
    return {
        "db": db,
        "devices": devices,
        "alert_rules": alert_rules,
        "offered_rate": rate or "max",
        "duration_s": duration,
        "published": load["sent"],
        "acked_by_broker": load["acked"],
        "refused_by_broker": load["refused"],
        "stored_rows": rows,
        "stored_distinct": distinct,
        "lost": load["acked"] - distinct,
        "persisted_rate": round(distinct / publishing),
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "collector_cpu_s_per_1k": round(cpu / max(1, committed) * 1000, 4),
        "mosquitto_cpu_s_per_1k": round(broker_cpu / max(1, committed) * 1000, 4),
        "loadgen_cpu_s_per_1k": round(load["cpu_s"] / max(1, load["sent"]) * 1000, 4),
        # The benchmark process: the collector plus this harness and its latency samples.
        "bench_process_peak_pss_mib": round(memory.peak["collector"], 1),
        "mosquitto_peak_pss_mib": round(memory.peak["mosquitto"], 1),
    }


def served_python() -> str:
    """The interpreter for `paku-iot serve` processes. `make bench` points it at a venv with
    only the runtime dependencies, as the container image has: memory figures then count
    what production loads, not the test tools."""
    return os.environ.get("PAKU_BENCH_PYTHON", sys.executable)


async def memory_under_load(
    work: Path, role: str, devices: int, rate: float, duration: float
) -> dict[str, Any]:
    """`paku-iot serve --role <role>` as its own process under a paced load: resident memory
    (RSS and PSS) at rest and at its peak, CPU per message, and what it stored."""
    async with stack("postgresql", work) as st:
        creds = await provision(st.settings, devices, "m-", work / "creds.json")
        server = subprocess.Popen(
            [served_python(), "-m", "paku_iot", "serve", "--role", role],
            env=st.env(PAKU_HTTP_PORT=str(free_port()), PAKU_INSTANCE_ID=f"mem-{role}"),
        )
        try:
            await asyncio.sleep(5)
            if server.poll() is not None:
                raise RuntimeError(f"paku-iot serve exited with {server.returncode}")
            rest_rss, rest_pss = rss_mib(server.pid), pss_mib(server.pid)
            cpu0 = cpu_seconds(server.pid)
            peak_rss = rest_rss
            sampler_stop = asyncio.Event()

            async def sample() -> None:
                nonlocal peak_rss
                while not sampler_stop.is_set():
                    peak_rss = max(peak_rss, rss_mib(server.pid))
                    await asyncio.sleep(0.5)

            with PeakMemory({"paku-iot": server.pid, "mosquitto": st.broker.pid}) as memory:
                sampler = asyncio.create_task(sample())
                load = await run_loadgen(
                    st, creds, "--duration", str(duration), "--rate", str(rate)
                )
                deadline = time.monotonic() + 120
                rows = 0
                while time.monotonic() < deadline:
                    rows, _ = await _stored(st)
                    if rows >= load["acked"]:
                        break
                    await asyncio.sleep(0.5)
                sampler_stop.set()
                await sampler
            cpu = cpu_seconds(server.pid) - cpu0
        finally:
            server.terminate()
            server.wait(30)
    return {
        "role": role,
        "offered_rate": rate,
        "published": load["sent"],
        "stored": rows,
        "rss_at_rest_mib": round(rest_rss, 1),
        "pss_at_rest_mib": round(rest_pss, 1),
        "peak_rss_mib": round(peak_rss, 1),
        "peak_pss_mib": round(memory.peak["paku-iot"], 1),
        "cpu_s_per_1k": round(cpu / max(1, rows) * 1000, 4),
    }


def _self_pid() -> int:
    return os.getpid()


async def ceiling(work: Path, devices: int, duration: float) -> dict[str, Any]:
    """A bare subscriber (gmqtt, QoS 1, acks on receipt, counts and nothing else) under the
    same load: what one Python process can take from this broker at all."""
    async with stack("sqlite", work) as st:
        creds = await provision(st.settings, devices, "c-", work / "creds.json")
        assert st.settings.broker_dir is not None
        password = BrokerPaths(st.settings.broker_dir).backend_password.read_text().strip()
        received = 0
        first = last = 0.0

        def on_message(*_args: Any) -> None:
            nonlocal received, first, last
            received += 1
            last = time.monotonic()
            if received == 1:
                first = last

        client = Client("bench-bare-subscriber", clean_session=True, receive_maximum=1000)
        client.set_auth_credentials(BACKEND_MQTT_USERNAME, password)
        client.on_message = on_message
        await client.connect("127.0.0.1", st.backend_port)
        client.subscribe("paku/+/telemetry", qos=1)
        await asyncio.sleep(0.5)
        cpu0 = time.process_time()
        load = await run_loadgen(st, creds, "--duration", str(duration))
        deadline = time.monotonic() + 60
        while received < load["acked"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cpu = time.process_time() - cpu0
        await client.disconnect()
    return {
        "devices": devices,
        "published": load["sent"],
        "received": received,
        "received_rate": round(received / max(1e-9, last - first)),
        "subscriber_cpu_s_per_1k": round(cpu / max(1, received) * 1000, 4),
    }


async def replicas(work: Path, devices: int, duration: float, count: int = 2) -> dict[str, Any]:
    """`count` collector-only processes on the shared subscription, PostgreSQL: combined
    rate, loss, duplicates, and each process's memory under load."""
    async with stack("postgresql", work) as st:
        creds = await provision(st.settings, devices, "r-", work / "creds.json")
        processes = [
            subprocess.Popen(
                [served_python(), "-m", "paku_iot", "serve", "--role", "collector"],
                env=st.env(
                    PAKU_INSTANCE_ID=f"replica-{n}",
                    PAKU_COLLECTOR_SHARED_SUBSCRIPTION="true",
                ),
            )
            for n in range(count)
        ]
        try:
            await asyncio.sleep(4)
            await _wait_subscribed(st, processes)
            rest = {f"collector-{n}": pss_mib(p.pid) for n, p in enumerate(processes)}
            pids = {f"collector-{n}": p.pid for n, p in enumerate(processes)}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.monotonic()
            with PeakMemory({**pids, "mosquitto": st.broker.pid}) as memory:
                load = await run_loadgen(st, creds, "--duration", str(duration))
                rows = distinct = 0
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    rows, distinct = await _stored(st)
                    if distinct >= load["acked"]:
                        break
                    await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
    return {
        "replicas": count,
        "devices": devices,
        "published": load["sent"],
        "acked_by_broker": load["acked"],
        "stored_rows": rows,
        "duplicates": rows - distinct,
        "lost": load["acked"] - distinct,
        "combined_rate_upper_bound": round(distinct / max(1e-9, load["elapsed_s"])),
        "combined_rate_wall": round(distinct / elapsed),
        "collector_cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "collector_pss_at_rest_mib": {k: round(v, 1) for k, v in rest.items()},
        "collector_peak_pss_mib": {k: round(v, 1) for k, v in memory.peak.items()},
    }


async def _wait_subscribed(st: Stack, processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is not None:
            raise RuntimeError(f"a collector exited with {process.returncode}")


async def idle_fleet(
    work: Path, provisioned: int, connected: int, seconds: float
) -> dict[str, Any]:
    """`paku-iot serve` (API + collector) with `connected` devices online and idle; then the
    API's latency on that registry."""
    async with stack("postgresql", work) as st:
        creds_path = await provision(st.settings, provisioned, "i-", work / "all.json")
        creds = json.loads(creds_path.read_text())
        online = work / "online.json"
        online.write_text(json.dumps(creds[:connected]))
        http_port = free_port()
        server = subprocess.Popen(
            [served_python(), "-m", "paku_iot", "serve"],
            env=st.env(PAKU_HTTP_PORT=str(http_port), PAKU_INSTANCE_ID="idle"),
        )
        base = f"http://127.0.0.1:{http_port}"
        try:
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": "Bearer " + "bench-token-" + "x" * 24}
            ) as api:
                await _wait_healthy(api)
                rest = {"paku-iot": pss_mib(server.pid), "mosquitto": pss_mib(st.broker.pid)}
                loadgen = asyncio.create_task(run_loadgen(st, online, "--idle", str(seconds + 10)))
                await asyncio.sleep(10)  # connects, and the state messages they send
                cpu0 = cpu_seconds(server.pid), cpu_seconds(st.broker.pid)
                await asyncio.sleep(seconds)
                cpu1 = cpu_seconds(server.pid), cpu_seconds(st.broker.pid)
                connected_pss = {
                    "paku-iot": pss_mib(server.pid),
                    "mosquitto": pss_mib(st.broker.pid),
                }
                load = await loadgen
                listing = await _time_requests(api, "/devices?limit=100", 300)
        finally:
            server.terminate()
            server.wait(30)
    return {
        "provisioned": provisioned,
        "connected": load["devices"],
        "connect_failures": load["connect_failures"],
        "pss_before_connect_mib": {k: round(v, 1) for k, v in rest.items()},
        "pss_connected_mib": {k: round(v, 1) for k, v in connected_pss.items()},
        "paku_cpu_pct_at_rest": round((cpu1[0] - cpu0[0]) / seconds * 100, 2),
        "mosquitto_cpu_pct_at_rest": round((cpu1[1] - cpu0[1]) / seconds * 100, 2),
        "devices_limit_100_p50_ms": listing[0],
        "devices_limit_100_p99_ms": listing[1],
    }


async def _wait_healthy(api: httpx.AsyncClient) -> None:
    for _ in range(300):
        try:
            if (await api.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("paku-iot serve did not become healthy")


async def _time_requests(api: httpx.AsyncClient, path: str, count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await api.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return round(statistics.median(samples), 2), round(percentile(samples, 0.99), 2)


async def big_table(work: Path, rows_wanted: int) -> dict[str, Any]:
    """One device's last day of telemetry, through the API, from a table of `rows_wanted`
    rows (one sample a minute from many devices over ten days), on PostgreSQL."""
    per_device_day = 1440
    days = 10
    devices = max(1, rows_wanted // (per_device_day * days))
    async with stack("postgresql", work) as st:
        await provision(st.settings, 1, "t-", work / "one.json")
        conn = await asyncpg.connect(st.url)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        try:
            engine = create_engine(st.url)
            async with engine.begin() as sa_conn:
                today = now.date()
                await ensure_partitions(
                    sa_conn, [today - timedelta(days=d) for d in range(-1, days + 1)]
                )
            await engine.dispose()
            started = time.monotonic()
            # Device t-00000 is the one queried; the rest are filler with the same shape.
            await conn.execute(
                """
                INSERT INTO telemetry (device_id, ts, received_at, payload)
                SELECT CASE WHEN d = 0 THEN 't-00000' ELSE 'filler-' || d END,
                       $1::timestamptz - make_interval(mins => m),
                       $1::timestamptz - make_interval(mins => m),
                       jsonb_build_object('temp', 20 + (m % 10), 'hum', 40, 'n', m)
                FROM generate_series(0, $2 - 1) AS d, generate_series(0, $3 - 1) AS m
                """,
                now,
                devices,
                per_device_day * days,
            )
            await conn.execute("ANALYZE telemetry")
            load_s = time.monotonic() - started
            total = await conn.fetchval("SELECT count(*) FROM telemetry")
        finally:
            await conn.close()
        http_port = free_port()
        server = subprocess.Popen(
            [served_python(), "-m", "paku_iot", "serve", "--role", "api"],
            env=st.env(PAKU_HTTP_PORT=str(http_port), PAKU_INSTANCE_ID="big"),
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}",
                headers={"Authorization": "Bearer " + "bench-token-" + "x" * 24},
            ) as api:
                await _wait_healthy(api)
                since = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")
                path = "/devices/t-00000/telemetry"
                query = {"from": since, "limit": "1000"}
                day_ms: list[float] = []
                items = 0
                for attempt in range(110):
                    started = time.perf_counter()
                    items = await _whole_window(api, path, query)
                    if attempt >= 10:  # the first requests warm caches and connections
                        day_ms.append((time.perf_counter() - started) * 1000)
            sql_ms = await _sql_day_ms(st.url, now)
        finally:
            server.terminate()
            server.wait(30)
    return {
        "table_rows": total,
        "load_s": round(load_s, 1),
        "query": "GET /devices/t-00000/telemetry?from=<now-1d>&limit=1000, then its next page",
        "items_per_day": items,
        "api_day_p50_ms": round(statistics.median(day_ms), 2),
        "api_day_p99_ms": round(percentile(day_ms, 0.99), 2),
        "sql_day_p50_ms": round(statistics.median(sql_ms), 2),
        "sql_day_p99_ms": round(percentile(sql_ms, 0.99), 2),
    }


async def _whole_window(api: httpx.AsyncClient, path: str, query: dict[str, str]) -> int:
    """Every item of a listing, following its `next` cursor; returns how many."""
    items = 0
    params = dict(query)
    while True:
        response = await api.get(path, params=params)
        response.raise_for_status()
        page = response.json()
        items += len(page["items"])
        if not page.get("next"):
            return items
        params = {**query, "cursor": page["next"]}


async def _sql_day_ms(url: str, now: datetime) -> list[float]:
    """The database's part: the same day read straight with asyncpg, the same query shape."""
    conn = await asyncpg.connect(url)
    samples = []
    try:
        for attempt in range(110):
            started = time.perf_counter()
            await conn.fetch(
                "SELECT id, ts, received_at, payload FROM telemetry WHERE device_id = $1 "
                "AND ts >= $2 ORDER BY ts DESC, id DESC",
                "t-00000",
                now - timedelta(days=1),
            )
            if attempt >= 10:
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return samples
