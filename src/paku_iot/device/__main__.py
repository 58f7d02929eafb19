"""Run one reference device: `python -m paku_iot.device --id ID --password PASSWORD`.

It publishes simulated telemetry every `--interval` seconds and answers the commands `ping`
(`{"pong": true}`) and `reboot` (`{"rebooting": true}`, nothing actually restarts).
Ctrl-C (or SIGTERM) disconnects gracefully: the retained state becomes `"online": false`.
The password may come from the environment (PAKU_DEVICE_PASSWORD) to keep it out of `ps`.

With `--tls` it connects over TLS and verifies the broker (certificate chain and host name)
with the system's CAs; `--cafile FILE` trusts only the CA certificates in FILE instead (the
`ca.crt` of `paku-iot dev --tls`, Caddy's internal root) and implies `--tls`. The HTTPS of
firmware updates is verified the same way.

With `--api-url` and `--ota-public-key` (the `publicKey` of `GET /ota/public-key`, pinned as
firmware would) it also checks for firmware updates at start and every `--ota-interval`
seconds, and installs them (device/ota.py): the running `fwVersion` then changes. A new
image is confirmed by its first telemetry PUBACK within `--confirm-window` seconds, else
rolled back (device/firmware.py); the command `ota.boot_previous` goes back on demand.
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
from pathlib import Path
from typing import Any

from paku_iot.device.client import DeviceConnectError, DeviceTlsError, ReferenceDevice
from paku_iot.device.ota import OtaError, load_public_key
from paku_iot.device.tls import client_context
from paku_iot.exceptions import InvalidInput
from paku_iot.protocol import OTA_CONFIRM_WINDOW_S

log = logging.getLogger("paku_iot.device")

# Protocol section 2: after a refused or failed connect, back off from 5 s to 5 min.
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m paku_iot.device", description="Run a paku reference device."
    )
    parser.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="broker port (default 1883, or 8883 with --tls or --cafile)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="MQTT over TLS, verifying the broker with the system CAs"
    )
    parser.add_argument(
        "--cafile",
        type=Path,
        metavar="FILE",
        help="trust only the CA certificates in this PEM file (implies --tls)",
    )
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
    parser.add_argument("--api-url", help="HTTP API for OTA updates, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--ota-public-key", help="pinned OTA key: publicKey of GET /ota/public-key (base64)"
    )
    parser.add_argument(
        "--model", help="the model this firmware is built for (OTA refuses any other's image)"
    )
    parser.add_argument(
        "--ota-dir", type=Path, help="where firmware images are kept (default ./ota-<id>)"
    )
    parser.add_argument(
        "--ota-interval", type=float, default=3600.0, help="seconds between OTA checks (3600)"
    )
    parser.add_argument(
        "--confirm-window",
        type=float,
        default=float(OTA_CONFIRM_WINDOW_S),
        help="seconds a new image has for its first healthy run (a telemetry PUBACK) before "
        f"the device rolls back ({OTA_CONFIRM_WINDOW_S})",
    )
    args = parser.parse_args(argv)
    if args.confirm_window <= 0:
        parser.error("--confirm-window must be above 0 seconds")
    if not args.password:
        parser.error("--password (or PAKU_DEVICE_PASSWORD) is required")
    if bool(args.api_url) != bool(args.ota_public_key):
        parser.error("--api-url and --ota-public-key go together (OTA needs both)")
    if args.api_url and not args.model:
        parser.error("--model is required with --api-url (OTA checks the image is for it)")
    if args.ota_public_key:
        try:
            load_public_key(args.ota_public_key)
        except ValueError as exc:
            parser.error(str(exc))
    if args.ota_dir is None:
        args.ota_dir = Path(f"ota-{args.device_id}")
    args.tls_context = None
    if args.tls or args.cafile is not None:
        try:
            args.tls_context = client_context(args.cafile)
        except InvalidInput as exc:
            parser.error(exc.message)
    if args.port is None:
        args.port = 1883 if args.tls_context is None else 8883
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
        except DeviceTlsError:
            raise  # the certificate or the address must change first: retrying cannot help
        except DeviceConnectError as exc:
            log.warning("%s; retrying in %.0f s", exc, delay)
        await sleep_unless_stopped(stop, delay)
        delay = min(delay * 2, MAX_RETRY_S)
    return False


async def check_for_update(device: ReferenceDevice, args: argparse.Namespace) -> bool:
    """One OTA check; a failure is logged and retried at the next check (an interrupted
    download resumes where it stopped). False when the restart into a new version could not
    reconnect: the caller then connects as at start."""
    try:
        installed = await device.update_firmware(args.api_url, args.ota_public_key, args.ota_dir)
    except OtaError as exc:
        log.warning("firmware update: %s", exc)
    except DeviceConnectError as exc:
        log.warning("firmware update installed, but reconnecting failed: %s", exc)
        return False
    else:
        if installed is None:
            log.info("firmware %s is up to date", device.fw_version)
        else:
            log.info("now running firmware %s", installed)
    return True


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
        model=args.model,
        keepalive=args.keepalive,
        tls=args.tls_context,
        confirm_window_s=args.confirm_window,
    )
    device.on_command("ping", ping)
    device.on_command("reboot", reboot)
    started = time.monotonic()
    next_ota_check = time.monotonic()
    try:
        if not await connect_with_backoff(device, stop):
            return
        while not stop.is_set():
            if args.api_url and time.monotonic() >= next_ota_check:
                next_ota_check = time.monotonic() + args.ota_interval
                reconnected = await check_for_update(device, args)
                if not reconnected and not await connect_with_backoff(device, stop):
                    return
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
    try:
        asyncio.run(run(args))
    except DeviceTlsError as exc:
        raise SystemExit(f"python -m paku_iot.device: {exc}") from None


if __name__ == "__main__":
    main()
