"""A fleet simulator: N reference devices, each its own MQTT connection with its own
credentials and Last Will, sending telemetry (with a device `ts`) at a total rate, now and
then an event, answering commands, applying config and taking OTA updates (checking the
manifest now and then, downloading, verifying and restarting) as the reference device does.

`paku-iot simulate` provisions the devices through the HTTP API (or reads credentials from a
CSV) and prints progress and a summary; `paku-iot dev --simulate N` runs a demo fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paku_iot.device import ReferenceDevice
from paku_iot.exceptions import InvalidInput

log = logging.getLogger("paku_iot.device.simulate")

Credentials = list[tuple[str, str]]


@dataclass(slots=True)
class FleetStats:
    connected: int = 0
    telemetry_sent: int = 0
    events_sent: int = 0
    commands_answered: int = 0
    updates_installed: int = 0
    update_failures: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"{elapsed:6.1f}s  connected {self.connected}  telemetry {self.telemetry_sent} "
            f"({self.telemetry_sent / elapsed:,.0f}/s)  events {self.events_sent}  "
            f"commands answered {self.commands_answered}  updates {self.updates_installed}"
            f"{f' ({self.update_failures} failed)' if self.update_failures else ''}  "
            f"errors {self.errors}"
        )


@dataclass(frozen=True, slots=True)
class OtaPlan:
    """Where the simulated devices look for updates, and how often."""

    api_url: str
    public_key_b64: str  # the release signing key the firmware pins (GET /ota/public-key)
    workdir: Path  # each device downloads into workdir/<device id>
    check_every_s: float


def read_credentials(path: Path) -> Credentials:
    """deviceId/username,password columns, as `paku-iot devices import --out` writes them."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    creds = [(r.get("username") or r.get("deviceId") or "", r.get("password") or "") for r in rows]
    if not creds or any(not user or not password for user, password in creds):
        raise InvalidInput(f"{path} needs username (or deviceId) and password columns")
    return creds


async def _take_updates(
    device: ReferenceDevice, plan: OtaPlan, stop: asyncio.Event, stats: FleetStats
) -> None:
    """Check for an update at a random moment of the first period, then once a period."""
    delay = random.random() * plan.check_every_s  # noqa: S311 - spread the checks
    workdir = plan.workdir / device.device_id
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return
        delay = plan.check_every_s
        try:
            installed = await device.update_firmware(plan.api_url, plan.public_key_b64, workdir)
        except Exception as exc:  # OtaError, or the API or broker away for a moment
            stats.update_failures += 1
            log.info("%s: update failed: %s", device.device_id, exc)
            continue
        if installed is not None:
            stats.updates_installed += 1
            # "Flashed": a simulated device keeps no image, or a big fleet fills the disk.
            shutil.rmtree(workdir, ignore_errors=True)


async def _run_device(
    device: ReferenceDevice, interval_s: float, stop: asyncio.Event, stats: FleetStats
) -> None:
    phase = random.random() * 2 * math.pi  # noqa: S311 - simulated readings, not secrets
    # Spread the first messages over one interval so the fleet does not publish in lockstep.
    await asyncio.sleep(random.random() * interval_s)  # noqa: S311
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await device.send_telemetry(
                {
                    "temp": round(21 + 3 * math.sin(phase + n / 30), 2),
                    "hum": round(45 + 10 * math.cos(phase + n / 50), 1),
                    "n": n,
                }
            )
            stats.telemetry_sent += 1
            if n % 100 == 99:
                await device.send_event("heartbeat", {"n": n})
                stats.events_sent += 1
        except Exception as exc:  # a broker hiccup: count it, keep the device going
            stats.errors += 1
            log.debug("%s: %s", device.device_id, exc)
        n += 1
        delay = interval_s - (time.monotonic() - started)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


async def run_fleet(
    host: str,
    port: int,
    credentials: Credentials,
    *,
    rate: float,
    duration_s: float | None,
    stop: asyncio.Event | None = None,
    progress: Callable[[FleetStats], None] | None = None,
    progress_every_s: float = 2.0,
    ota: OtaPlan | None = None,
) -> FleetStats:
    """Run the fleet until `duration_s` passes or `stop` is set; returns the counts."""
    if rate <= 0:
        raise InvalidInput("rate must be above 0 messages per second")
    stop = stop or asyncio.Event()
    stats = FleetStats()
    interval_s = len(credentials) / rate
    devices: list[ReferenceDevice] = []

    async def answer(_params: dict[str, Any]) -> dict[str, Any]:
        stats.commands_answered += 1
        return {"pong": True}

    for device_id, password in credentials:
        device = ReferenceDevice(host, port, device_id, password, fw_version="1.0.0")
        device.on_command("ping", answer)
        device.on_command("reboot", answer)
        try:
            await device.connect()
        except Exception as exc:
            stats.errors += 1
            log.warning("%s could not connect: %s", device_id, exc)
            continue
        stats.connected += 1
        devices.append(device)
    tasks = [asyncio.create_task(_run_device(d, interval_s, stop, stats)) for d in devices]
    if ota is not None:
        tasks += [asyncio.create_task(_take_updates(d, ota, stop, stats)) for d in devices]
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set():
            remaining = progress_every_s
            if deadline is not None:
                remaining = min(remaining, deadline - time.monotonic())
                if remaining <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=remaining)
            if progress is not None:
                progress(stats)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(d.disconnect() for d in devices), return_exceptions=True)
    return stats
