"""Crashes in compose/dev.yaml's containers, on a real Docker engine: devices publish QoS 1
telemetry with unique `ts` through the published MQTT port (paho clients that remember which
messages the broker PUBACKed, tests/support/faults.py), and in turn paku-iot, postgres and
mosquitto are SIGKILLed. Compose's restart policy (`restart: unless-stopped`) brings each
back; once everything is healthy again, every message the broker acknowledged must be in
PostgreSQL exactly once (read with psql in the postgres container).

The kill is a crash, not an operator: SIGKILL to the container's main process from the host.
`docker kill` would not do, as Docker counts it as a manual stop and its restart policy then
leaves the container down.

One stack for the kills (~2 minutes warm): paku-iot, postgres and mosquitto, each while the
devices stream (nothing acknowledged may be lost), then mosquitto again while the collector
is frozen (`docker pause`), so that the broker holds a queue for it when it dies. Mosquitto
keeps that queue in memory and writes it to disk only at autosave points (the generated
mosquitto.conf: every 30 s); what it had queued since dies with it. That case asserts the
documented bound instead: docs/reliability.md, "Faults in containers"."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.containers.test_dev_stack import Stack
from tests.support import eventually
from tests.support.compose import environment
from tests.support.faults import Fleet, Key
from tests.support.processes import provision
from tests.support.stacks import default_services, docker, wait_until_ready

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

DEVICES = 4
RATE = 300.0  # msgs/s, all devices together
STREAM_S = 10.0  # per kill: the kill comes KILL_AFTER_S into it
KILL_AFTER_S = 3.0
# Long enough for more than the collector's in-flight window (max_inflight_messages 1000,
# most of it waiting in the frozen process's socket buffer) to queue in the broker.
BACKLOG_S = 8.0
CONFIG = "/paku/broker/mosquitto.conf"  # the generated one, in the broker volume
RECOVERED_WITHIN = 120.0


@dataclass
class Phase:
    """One kill: which rounds of the fleet's stream it covers, and what it cost."""

    service: str
    # The collector frozen (`docker pause`) from the stream's start until the kill: the broker
    # holds a backlog for its persistent session when it dies.
    backlog: bool = False
    kill_after_s: float = KILL_AFTER_S
    first_round: int = 0
    last_round: int = 0
    down_s: float = 0.0
    broker_cpu_s: float = 0.0  # the broker's CPU time from the stream's start to the kill
    kill_round: int = 0
    acked: set[Key] = field(default_factory=set)
    lost: set[Key] = field(default_factory=set)


def inspect(container: str, template: str) -> str:
    result = docker("inspect", "--format", template, container)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def cpu_seconds(container: str) -> float:
    """CPU time (user + system) of the container's main process so far."""
    pid = int(inspect(container, "{{.State.Pid}}"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def crash(container: str, before: Callable[[], None] = lambda: None) -> int:
    """SIGKILL the container's main process, as the kernel's OOM killer would; returns the
    container's restart count before. `before` runs just before the signal."""
    restarts = int(inspect(container, "{{.RestartCount}}"))
    pid = int(inspect(container, "{{.State.Pid}}"))
    assert pid > 0, f"{container} is not running"
    before()
    os.kill(pid, signal.SIGKILL)
    return restarts


async def recovered(stack: Stack, container: str, restarts: int) -> float:
    """Until the restart policy has started `container` again and every service is healthy;
    returns how long that took."""
    started = time.monotonic()

    async def restarted() -> None:
        assert int(inspect(container, "{{.RestartCount}}")) > restarts, "not restarted yet"
        states = stack.states()
        for name, service in default_services("dev").items():
            if str(service.get("restart", "")) == "no":
                continue
            status, _code, health = states.get(name, ("missing", 0, ""))
            assert (status, health) == ("running", "healthy"), states

    async def polled() -> None:
        try:
            await restarted()
        except AssertionError:
            await asyncio.sleep(0.5)  # docker inspect is not free
            raise

    await eventually(polled, timeout=RECOVERED_WITHIN)
    return time.monotonic() - started


def stored_keys(stack: Stack) -> list[Key]:
    """Every telemetry row as (device, ts ms), duplicates included: psql in the container."""
    query = (
        "select device_id, (extract(epoch from ts) * 1000)::bigint from telemetry "
        "where device_id like 'fault-%'"
    )
    result = subprocess.run(
        [
            "docker",
            "exec",
            stack.container("postgres"),
            *("psql", "-U", "paku", "-d", "paku", "-At", "-F", " ", "-c", query),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    keys = []
    for line in result.stdout.splitlines():
        device_id, ts = line.split()
        keys.append((device_id, int(ts)))
    return keys


async def run_phase(stack: Stack, fleet: Fleet, phase: Phase) -> None:
    """Stream for STREAM_S seconds; KILL_AFTER_S into it, crash `phase.service`. Returns
    once the stream is over and the stack is healthy again."""
    container = stack.container(phase.service)
    phase.first_round = fleet.rounds
    per_device = int(STREAM_S * RATE / len(fleet.devices))
    frozen = stack.container("paku-iot") if phase.backlog else None
    if frozen:
        assert docker("pause", frozen).returncode == 0
    broker = stack.container("mosquitto")
    cpu = cpu_seconds(broker)
    streaming = asyncio.create_task(asyncio.to_thread(fleet.stream, per_device, RATE))
    await asyncio.sleep(phase.kill_after_s)
    phase.broker_cpu_s = cpu_seconds(broker) - cpu

    def killing() -> None:
        phase.kill_round = fleet.rounds

    restarts = crash(container, killing)
    if frozen:
        assert docker("unpause", frozen).returncode == 0
    phase.down_s = await recovered(stack, container, restarts)
    await streaming
    phase.last_round = fleet.rounds


async def test_crashed_containers_come_back_and_lose_nothing_acknowledged(
    engine: list[str],
) -> None:
    for name, service in default_services("dev").items():
        if str(service.get("restart", "")) != "no":
            assert service.get("restart") == "unless-stopped", name
    stack = Stack()
    token = environment(default_services("dev")["paku-iot"])["PAKU_ADMIN_TOKEN"]
    base_url = f"http://127.0.0.1:{stack.http_port}"
    phases = [
        Phase("paku-iot"),
        Phase("postgres"),
        Phase("mosquitto"),
        Phase("mosquitto", backlog=True, kill_after_s=BACKLOG_S),
    ]
    fleet: Fleet | None = None
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        up = stack.compose("up", "-d", "--build", timeout=1800)
        assert up.returncode == 0, f"docker-compose up failed:\n{up.stdout}\n{up.stderr}"
        await wait_until_ready(stack)
        timings["up, healthy"] = time.monotonic() - started

        creds = [
            (f"fault-{n}", await provision(base_url, f"fault-{n}", token)) for n in range(DEVICES)
        ]
        fleet = Fleet("127.0.0.1", stack.mqtt_port, creds)
        await fleet.connect()  # paho retries until the broker's watcher has reloaded
        await fleet.wait_for_subscriber()

        for phase in phases:
            started = time.monotonic()
            await run_phase(stack, fleet, phase)
            name = phase.service + (" with a backlog" if phase.backlog else "")
            timings[f"{name} killed, healthy again"] = phase.down_s
            await fleet.wait_answered(timeout=120)
            timings[f"{name} phase"] = time.monotonic() - started

        # Everything acknowledged has reached the database once the collector is idle:
        # until nothing is missing, or the same is missing for 5 s (lost, not late).
        acked = fleet.acked()
        sent = fleet.sent()
        started = time.monotonic()
        missing: list[int] = []
        while time.monotonic() - started < 60:
            stored = stored_keys(stack)
            missing.append(len(acked - set(stored)))
            if missing[-1] == 0 or missing[-5:] == [missing[-1]] * 5:
                break
            await asyncio.sleep(1)
        timings["settled"] = time.monotonic() - started

        assert len(stored) == len(set(stored)), "duplicate rows"
        assert not set(stored) - sent, "rows nobody sent"
        for phase in phases:
            rounds = range(fleet.base_ts + phase.first_round, fleet.base_ts + phase.last_round)
            phase.acked = {key for key in acked if key[1] in rounds}
            phase.lost = phase.acked - set(stored)
        report = [
            f"{p.service}{' with a backlog' if p.backlog else ''}: "
            f"{len(p.acked) - len(p.lost)} of {len(p.acked)} acked stored, "
            f"back in {p.down_s:.1f} s, broker CPU before the kill {p.broker_cpu_s:.2f} s"
            for p in phases
        ]
        autosave = docker(
            "exec", stack.container("mosquitto"), "grep", "autosave", CONFIG
        ).stdout.split("\n")
        print("PUBACK codes:", fleet.codes(), "broker config:", autosave)
        print("phases:", report)
        for phase in phases[:3]:
            assert not phase.lost, report
        # The documented bound (docs/reliability.md, "Faults in containers"): a broker that
        # crashes loses what it had queued for the collector since its last autosave, and
        # nothing it acknowledged after coming back. Measured: ~1,430 of the 3,000 (all that
        # was queued beyond the collector's in-flight window); `autosave_on_changes true`
        # with `autosave_interval 1` closed it but cuts the broker to a few hundred msgs/s
        # while a queue grows (docs/performance.md).
        backlog = phases[3]
        # (The round under way at the kill may have reached the old broker, in part.)
        after_kill = fleet.base_ts + backlog.kill_round + 1
        late = sorted(key[1] - fleet.base_ts for key in backlog.lost if key[1] >= after_kill)
        assert not late, (report, backlog.first_round, backlog.kill_round, late[:20])
        queued = (backlog.kill_round - backlog.first_round) * DEVICES
        assert len(backlog.lost) <= queued, report
    except BaseException:
        stack.print_logs("200")
        raise
    finally:
        if fleet is not None:
            fleet.close()
        started = time.monotonic()
        down = stack.compose("down", "-v", "--remove-orphans")
        timings["down -v"] = time.monotonic() - started
        print("timings:", {step: round(seconds, 1) for step, seconds in timings.items()})
    assert down.returncode == 0, down.stderr
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
