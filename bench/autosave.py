"""What Mosquitto's `autosave_on_changes` costs (docs/performance.md, "Mosquitto autosave").

A persistent session (clean start off, session expiry 1 h) subscribes with QoS 1 and leaves,
so everything published after that queues for it, as for a collector that is down. One
publisher then sends K QoS 1 messages (window 100) and waits for every PUBACK; printed: the
acknowledged rate, the broker's CPU time, and the size of its persistence file. Each run gets
its own Mosquitto and directory, with the persistence settings of the generated config plus
the autosave lines under test.

    .venv/bin/python -m bench.autosave 2000 10000 50000
    AUTOSAVE="interval 30,on changes 1000" .venv/bin/python -m bench.autosave 50000
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import cpu_seconds, free_port
from paku_iot.broker.process import find_mosquitto

CONFIGS = {
    "interval 30": ["autosave_interval 30"],  # the generated config's
    "on changes 1": ["autosave_on_changes true", "autosave_interval 1"],
    "on changes 100": ["autosave_on_changes true", "autosave_interval 100"],
    "on changes 1000": ["autosave_on_changes true", "autosave_interval 1000"],
}
PAYLOAD = json.dumps({"ts": 1, "n": 0, "temp": 21.5, "hum": 40, "pad": "x" * 100})


def client(client_id: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)


def leave_a_queue(port: int) -> None:
    """A persistent session subscribed to t/# that is offline from now on."""
    subscriber = client("collector")
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subscriber.connect("127.0.0.1", port, clean_start=False, properties=props)
    subscriber.loop_start()
    time.sleep(0.2)
    subscriber.subscribe("t/#", qos=1)
    time.sleep(0.3)
    subscriber.disconnect()
    subscriber.loop_stop()


def run(lines: list[str], count: int) -> tuple[float, float, int]:
    """(wall seconds until the last PUBACK, broker CPU seconds, persistence file bytes)."""
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        config = Path(workdir) / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    f"listener {port} 127.0.0.1",
                    "allow_anonymous true",
                    f"user {getpass.getuser()}",  # as the generated config: no switch
                    "persistence true",
                    f"persistence_location {workdir}/",
                    "max_inflight_messages 1000",
                    "max_queued_messages 1000000",
                    *lines,
                ]
            )
            + "\n"
        )
        broker = subprocess.Popen(
            [find_mosquitto(os.environ.get("PAKU_MOSQUITTO_BIN")), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            leave_a_queue(port)
            publisher = client("publisher")
            publisher.max_inflight_messages_set(100)
            done = threading.Event()
            acked = [0]

            def on_publish(*_args: object) -> None:
                acked[0] += 1
                if acked[0] == count:
                    done.set()

            publisher.on_publish = on_publish
            publisher.connect("127.0.0.1", port)
            publisher.loop_start()
            time.sleep(0.2)
            cpu = cpu_seconds(broker.pid)
            started = time.monotonic()
            for n in range(count):
                publisher.publish(f"t/{n % 4}", PAYLOAD, qos=1)
            done.wait(900)
            wall = time.monotonic() - started
            cpu = cpu_seconds(broker.pid) - cpu
            publisher.disconnect()
            publisher.loop_stop()
            database = Path(workdir) / "mosquitto.db"
            return wall, cpu, database.stat().st_size if database.exists() else 0
        finally:
            broker.kill()
            broker.wait()


def main() -> None:
    counts = [int(arg) for arg in sys.argv[1:]] or [2000, 10000]
    wanted = [name for name in os.environ.get("AUTOSAVE", "").split(",") if name]
    for name in wanted or list(CONFIGS):
        for count in counts:
            wall, cpu, size = run(CONFIGS[name], count)
            print(
                f"{name:16} {count:7,} queued: {count / wall:8,.0f} msgs/s acked, "
                f"{wall:6.2f} s, broker CPU {cpu:6.2f} s, file {size / 1e6:5.1f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
