"""A load generator: N device connections (gmqtt, MQTT v5), each publishing QoS 1 telemetry
with a device `ts`, paced to a total rate or flat out. Run in its own process."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from gmqtt import Client


async def run_device(
    host: str, port: int, device_id: str, password: str, count: int, interval: float
) -> None:
    client = Client(f"{device_id}-load")
    client.set_auth_credentials(device_id, password)
    await client.connect(host, port, keepalive=60)
    base = int(time.time() * 1000) * 1000
    started = time.monotonic()
    for n in range(count):
        payload = json.dumps({"ts": (base + n) / 1000, "temp": 21.5, "hum": 40, "n": n})
        client.publish(f"paku/{device_id}/telemetry", payload, qos=1)
        if interval:
            delay = started + (n + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif n % 50 == 0:
            await asyncio.sleep(0)
    # Wait for the broker's PUBACKs before leaving.
    while client._persistent_storage.get_all():
        await asyncio.sleep(0.01)
    await client.disconnect()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials", required=True, help="JSON file: [[id, password], ...]")
    parser.add_argument("--messages", type=int, required=True, help="per device")
    parser.add_argument("--rate", type=float, default=0, help="total msgs/s; 0 = flat out")
    args = parser.parse_args()
    with open(args.credentials) as fh:
        devices = json.load(fh)
    interval = len(devices) / args.rate if args.rate else 0.0
    await asyncio.gather(
        *(run_device(args.host, args.port, d, p, args.messages, interval) for d, p in devices)
    )


if __name__ == "__main__":
    asyncio.run(main())
