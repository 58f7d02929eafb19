"""What a queue for the collector costs Mosquitto in memory (docs/performance.md, "The
broker's queue for the collector"): the figure behind `PAKU_BROKER_MAX_QUEUED_MESSAGES` and
`PAKU_BROKER_MAX_QUEUED_BYTES`.

A persistent session (clean start off, session expiry 1 h) subscribes to every device's
telemetry at QoS 1 and leaves, as a collector that is down or far behind. The load generator
of `make bench` (100 devices, flat out) then publishes N messages of the size it always sends
(about 60 bytes of JSON); the broker queues them all (no limit in this config). Printed per N:
the broker's RSS, the growth per queued message, and how fast the broker took them.

    .venv/bin/python -m bench.broker_queue 100000 300000 1000000
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import free_port, raise_fd_limit, rss_mib
from paku_iot.broker.process import find_mosquitto

DEVICES = 100


def leave_a_queue(port: int) -> None:
    """A persistent session subscribed to the telemetry of every device, offline from now."""
    subscriber = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="collector", protocol=paho.MQTTv5
    )
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subscriber.connect("127.0.0.1", port, clean_start=False, properties=props)
    subscriber.loop_start()
    time.sleep(0.2)
    subscriber.subscribe("paku/+/telemetry", qos=1)
    time.sleep(0.3)
    subscriber.disconnect()
    subscriber.loop_stop()


def measure(messages: int, work: Path) -> dict[str, float]:
    port = free_port()
    config = work / f"mosquitto-{messages}.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        # The collector's limits as generated, but no cap on the queue: we measure it.
        "max_inflight_messages 1000\nmax_queued_messages 0\nset_tcp_nodelay true\n"
    )
    broker = subprocess.Popen(
        [find_mosquitto(None), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        leave_a_queue(port)
        before = rss_mib(broker.pid)
        credentials = work / "devices.json"
        credentials.write_text(json.dumps([[f"q{n:03d}", "x"] for n in range(DEVICES)]))
        done = subprocess.run(
            [
                *(sys.executable, "-m", "bench.loadgen", "--port", str(port)),
                *("--credentials", str(credentials), "--messages", str(messages)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        load = json.loads(done.stdout.strip().splitlines()[-1])
        time.sleep(0.5)
        after = rss_mib(broker.pid)
        return {
            "queued": messages,
            "acked": load["acked"],
            "rss_before_mib": round(before, 1),
            "rss_after_mib": round(after, 1),
            "bytes_per_message": round((after - before) * 1024 * 1024 / messages),
            "published_msgs_per_s": round(messages / load["elapsed_s"]),
        }
    finally:
        broker.terminate()
        broker.wait()


def main() -> None:
    raise_fd_limit()
    counts = [int(arg) for arg in sys.argv[1:]] or [100_000, 300_000, 1_000_000]
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            print(json.dumps(measure(count, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
