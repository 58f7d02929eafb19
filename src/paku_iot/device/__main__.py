"""Run one reference device: `python -m paku_iot.device --id ID --password PASSWORD`.

It publishes simulated telemetry every `--interval` seconds and answers the commands `ping`
(`{"pong": true}`) and `reboot` (`{"rebooting": true}`, nothing actually restarts).
Ctrl-C (or SIGTERM) disconnects gracefully: the retained state becomes `"online": false`.
The password may come from the environment (PAKU_DEVICE_PASSWORD) to keep it out of `ps`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from typing import Any

from paku_iot.device.client import DeviceConnectError, ReferenceDevice

log = logging.getLogger("paku_iot.device")

# Protocol section 2: after a refused or failed connect, back off from 5 s to 5 min.
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m paku_iot.device", description="Run a paku reference device."
    )
    parser.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    parser.add_argument("--id", required=True, dest="device_id", help="device id (= username)")
    parser.add_argument(
        "--password",
        default=os.environ.get("PAKU_DEVICE_PASSWORD"),
        help="provisioning password (default: $PAKU_DEVICE_PASSWORD)",
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between telemetry (default 5)"
    )
    parser.add_argument("--keepalive", type=int, default=30, help="MQTT keepalive in s (30)")
    parser.add_argument("--fw-version", default="1.0.0", help="reported fwVersion (1.0.0)")
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("--password (or PAKU_DEVICE_PASSWORD) is required")
    return args


def sample(started: float) -> dict[str, Any]:
    """Plausible, deterministic readings: slow waves rather than random numbers."""
    elapsed = time.monotonic() - started
    return {
        "temp": round(21.0 + 2.0 * math.sin(elapsed / 300.0), 2),
        "hum": round(45.0 + 5.0 * math.cos(elapsed / 420.0), 1),
        "uptime": int(elapsed),
    }


async def ping(_params: dict[str, Any]) -> dict[str, Any]:
    return {"pong": True}


async def reboot(_params: dict[str, Any]) -> dict[str, Any]:
    # Real firmware acknowledges first and restarts afterwards, once the ack and the command's
    # PUBACK have left: restarting inside the handler would get the command delivered again.
    log.info("reboot requested (simulated: nothing restarts)")
    return {"rebooting": True}


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def connect_with_backoff(device: ReferenceDevice, stop: asyncio.Event) -> bool:
    """Connect, retrying 5 s doubling to 5 min. False if stopped before connecting."""
    delay = FIRST_RETRY_S
    while not stop.is_set():
        try:
            await device.connect()
            return True
        except DeviceConnectError as exc:
            log.warning("%s; retrying in %.0f s", exc, delay)
        await sleep_unless_stopped(stop, delay)
        delay = min(delay * 2, MAX_RETRY_S)
    return False


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    device = ReferenceDevice(
        args.host,
        args.port,
        args.device_id,
        args.password,
        fw_version=args.fw_version,
        keepalive=args.keepalive,
    )
    device.on_command("ping", ping)
    device.on_command("reboot", reboot)
    started = time.monotonic()
    try:
        if not await connect_with_backoff(device, stop):
            return
        while not stop.is_set():
            try:
                sent = await device.send_telemetry(sample(started))
                log.info("telemetry %s", sent)
            except (ConnectionError, TimeoutError) as exc:
                # The device reconnects by itself; skip this sample rather than pile them up.
                log.warning("telemetry not sent: %s", exc)
            await sleep_unless_stopped(stop, args.interval)
    finally:
        await device.disconnect(graceful=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # gmqtt narrates every packet at INFO; its warnings are enough.
    logging.getLogger("gmqtt").setLevel(logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
