"""A fleet simulator: N reference devices, each its own MQTT connection with its own
credentials and Last Will, sending telemetry (with a device `ts`) at a total rate, now and
then an event, answering commands, applying config and taking OTA updates (checking the
manifest now and then, downloading, verifying and restarting) as the reference device does.

`paku-iot simulate` provisions the devices through the HTTP API (or reads credentials from a
CSV) and prints progress and a summary; `paku-iot dev --simulate N` runs a demo fleet.

With a TLS context (`tls.client_context`) every device speaks MQTT over TLS verifying the
broker, and its firmware updates verify the HTTPS server with the same context. A
certificate that does not verify stops the fleet before it starts: it would fail the same
way for every device.

A new image is confirmed after its first healthy run, or rolled back, as on the reference
device (device/firmware.py), within `confirm_window_s` (short by default, for development).
With `fail_share` F, that share of the devices fail every new build (it runs, but never
healthy): they roll back when the window passes and do not take that version again. Which
devices fail is fixed by a hash of their id (`fails_new_build`), so a run is reproducible.

The counts a run ends with: telemetry `sent` (handed to the broker on a live connection) and
`acked` (PUBACKed by the broker, late acknowledgements included). What the backend stored of
the fleet's telemetry should equal `acked`: fewer means the broker acknowledged something
that was then lost; more, that the broker took a message whose PUBACK never reached the
device before the run ended (then `sent` is above `acked` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import logging
import math
import random
import shutil
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paku_iot.device.client import DeviceTlsError, ReferenceDevice
from paku_iot.exceptions import InvalidInput, SettingsError, Unavailable

log = logging.getLogger("paku_iot.device.simulate")

Credentials = list[tuple[str, str]]

# Devices connecting at the same time: over a WAN each connect is several round trips (TCP,
# TLS, CONNECT, SUBSCRIBE, the state's PUBACK), too slow one by one for a thousand devices.
CONNECT_CONCURRENCY = 20
# A new image's confirmation window in a simulated fleet: short, so that a development run
# sees confirmations and rollbacks soon (firmware should use protocol.OTA_CONFIRM_WINDOW_S).
DEFAULT_CONFIRM_WINDOW_S = 10.0


def fails_new_build(device_id: str, share: float) -> bool:
    """Whether this device fails new builds when `share` of the fleet does: the first 8 bytes
    of SHA-256(id) as a fraction of 2^64, below `share`. Stable across runs and processes
    (Python's hash() is salted per process)."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(slots=True)
class FleetStats:
    devices: int = 0
    connected: int = 0
    telemetry_sent: int = 0  # handed to the broker (QoS 1)
    telemetry_acked: int = 0  # PUBACKed by the broker
    events_sent: int = 0
    commands_answered: int = 0
    updates_installed: int = 0
    updates_confirmed: int = 0
    updates_rolled_back: int = 0
    update_failures: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float | None = None  # set when the run ends

    def tally(self, devices: Iterable[ReferenceDevice]) -> None:
        """Take the telemetry counts from the devices, which count every PUBACK."""
        devices = list(devices)
        self.telemetry_sent = sum(d.telemetry_published for d in devices)
        self.telemetry_acked = sum(d.telemetry_acknowledged for d in devices)
        self.updates_confirmed = sum(d.firmware.slots.confirmations for d in devices)
        self.updates_rolled_back = sum(d.firmware.slots.rollbacks for d in devices)

    def elapsed(self) -> float:
        if self.elapsed_s is not None:
            return self.elapsed_s
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        elapsed = self.elapsed()
        return (
            f"{elapsed:6.1f}s  connected {self.connected}  telemetry sent "
            f"{self.telemetry_sent} acked {self.telemetry_acked} "
            f"({self.telemetry_acked / elapsed:,.0f}/s)  events {self.events_sent}  "
            f"commands answered {self.commands_answered}  updates {self.updates_installed}"
            f"{f' ({self.update_failures} failed)' if self.update_failures else ''}"
            f" confirmed {self.updates_confirmed} rolled back {self.updates_rolled_back}  "
            f"errors {self.errors}"
        )

    def summary(self) -> dict[str, Any]:
        """The final counts, as `paku-iot simulate --json` prints them."""
        return {
            "devices": self.devices,
            "connected": self.connected,
            "seconds": round(self.elapsed(), 3),
            "telemetrySent": self.telemetry_sent,
            "telemetryAcked": self.telemetry_acked,
            "eventsSent": self.events_sent,
            "commandsAnswered": self.commands_answered,
            "updatesInstalled": self.updates_installed,
            "updatesConfirmed": self.updates_confirmed,
            "updatesRolledBack": self.updates_rolled_back,
            "updateFailures": self.update_failures,
            "errors": self.errors,
        }


@dataclass(frozen=True, slots=True)
class OtaPlan:
    """Where the simulated devices look for updates, and how often."""

    api_url: str
    public_key_b64: str  # the release signing key the firmware pins (GET /ota/public-key)
    workdir: Path  # each device downloads into workdir/<device id>
    check_every_s: float
    model: str = "simulated"  # the model the simulated firmware is built for


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
        if device.firmware.pending_verify:
            continue  # the image running is confirmed or rolled back first
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
            # Counted by the device: sent once handed over, acked at its PUBACK.
            await device.send_telemetry(
                {
                    "temp": round(21 + 3 * math.sin(phase + n / 30), 2),
                    "hum": round(45 + 10 * math.cos(phase + n / 50), 1),
                    "n": n,
                }
            )
            if n % 100 == 99:
                await device.send_event("heartbeat", {"n": n})
                stats.events_sent += 1
        except Exception as exc:
            # A send cut short because the device went offline on purpose (restarting into a
            # new image after an OTA update) is not an error; anything else (a broker hiccup)
            # is counted, and the device goes on.
            if device.staying_online:
                stats.errors += 1
            log.debug("%s: %s", device.device_id, exc)
        n += 1
        delay = interval_s - (time.monotonic() - started)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


async def _connect_all(
    devices: list[ReferenceDevice], stats: FleetStats, concurrency: int
) -> list[ReferenceDevice]:
    """Connect the devices, `concurrency` at a time; returns those connected. A failure is
    counted and the device left out, except a TLS failure, which every device would meet:
    then the connected ones leave again and SettingsError says what failed. When no device
    connects at all, Unavailable says why the first one did not."""
    gate = asyncio.Semaphore(concurrency)
    tls_failures: list[DeviceTlsError] = []
    failures: list[Exception] = []

    async def connect(device: ReferenceDevice) -> bool:
        async with gate:
            if tls_failures:
                return False
            try:
                await device.connect()
            except DeviceTlsError as exc:
                tls_failures.append(exc)
                return False
            except Exception as exc:
                stats.errors += 1
                failures.append(exc)
                log.warning("%s could not connect: %s", device.device_id, exc)
                return False
            stats.connected += 1
            return True

    results = await asyncio.gather(*(connect(device) for device in devices))
    connected = [device for device, ok in zip(devices, results, strict=True) if ok]
    if tls_failures:
        await asyncio.gather(*(d.disconnect() for d in connected), return_exceptions=True)
        raise SettingsError(str(tls_failures[0])) from tls_failures[0]
    if failures and not connected:
        raise Unavailable(
            f"none of the {len(devices)} devices could connect; the first: {failures[0]}"
        ) from failures[0]
    return connected


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
    tls: ssl.SSLContext | None = None,
    connect_concurrency: int = CONNECT_CONCURRENCY,
    fail_share: float = 0.0,
    confirm_window_s: float = DEFAULT_CONFIRM_WINDOW_S,
) -> FleetStats:
    """Run the fleet until `duration_s` passes or `stop` is set; returns the counts.

    `tls`: connect over TLS, verifying the broker (and the OTA server) with this context.
    `fail_share` of the devices (chosen by `fails_new_build`) fail new builds, which roll
    back after `confirm_window_s`. Raises SettingsError when the broker's certificate does
    not verify."""
    if rate <= 0:
        raise InvalidInput("rate must be above 0 messages per second")
    if not 0 <= fail_share <= 1:
        raise InvalidInput("the share of devices failing new builds must be between 0 and 1")
    if confirm_window_s <= 0:
        raise InvalidInput("the confirmation window must be above 0 seconds")
    stop = stop or asyncio.Event()
    stats = FleetStats(devices=len(credentials))
    interval_s = len(credentials) / rate

    async def answer(_params: dict[str, Any]) -> dict[str, Any]:
        stats.commands_answered += 1
        return {"pong": True}

    fleet = []
    for device_id, password in credentials:
        device = ReferenceDevice(
            host,
            port,
            device_id,
            password,
            fw_version="1.0.0",
            model=ota.model if ota is not None else None,
            tls=tls,
            confirm_window_s=confirm_window_s,
        )
        if fails_new_build(device_id, fail_share):
            device.firmware.fault = "unhealthy"
        device.on_command("ping", answer)
        device.on_command("reboot", answer)
        fleet.append(device)
    devices = await _connect_all(fleet, stats, connect_concurrency)
    stats.started = time.monotonic()  # rates and the duration count from here, not connecting
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
                stats.tally(devices)
                progress(stats)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        stats.elapsed_s = time.monotonic() - stats.started
        await asyncio.gather(*(d.disconnect() for d in devices), return_exceptions=True)
        stats.tally(devices)
    return stats
