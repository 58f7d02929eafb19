"""A lean MQTT v5 load generator: one TCP connection per device, QoS 1 telemetry with a
device `ts` (the send time, so the collector side can measure publish-to-commit latency).

It speaks the few packets it needs directly (CONNECT, PUBLISH, PUBACK, PINGREQ) so that the
load generator costs a few microseconds a message and leaves the CPU to what is measured.
Run it in its own process; it prints one JSON summary line at the end.

    python -m bench.loadgen --port 1883 --credentials creds.json --duration 20 --rate 5000
    python -m bench.loadgen --port 1883 --credentials creds.json --idle 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import struct
import time

WINDOW = 32  # unacknowledged publishes per connection


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str, password: str, keepalive: int) -> bytes:
    # Protocol name, level 5, flags: username + password + clean start, keepalive, no props.
    variable = _string("MQTT") + bytes([5, 0xC2]) + struct.pack("!H", keepalive) + b"\x00"
    payload = _string(client_id) + _string(username) + _string(password)
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


class Device(asyncio.Protocol):
    def __init__(self, load: Load, device_id: str, password: str) -> None:
        self.load = load
        self.device_id = device_id
        self.password = password
        self.topic = _string(f"paku/{device_id}/telemetry")
        self.transport: asyncio.Transport | None = None
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.buffer = b""
        self.next_mid = 0
        self.in_flight = 0
        self.last_ts = 0.0
        self.n = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(connect_packet(self.device_id, self.device_id, self.password, 60))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.load.stopping:
            self.load.lost += 1
        self.closed.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        acked = 0
        while len(buf) >= 2:
            length, shift, pos = 0, 0, 1
            while True:
                if pos >= len(buf):
                    self.buffer = buf
                    self._on_acked(acked)
                    return
                byte = buf[pos]
                length |= (byte & 0x7F) << shift
                shift += 7
                pos += 1
                if not byte & 0x80:
                    break
            if len(buf) < pos + length:
                break
            kind = buf[0] & 0xF0
            body = buf[pos : pos + length]
            buf = buf[pos + length :]
            if kind == 0x40:  # PUBACK
                acked += 1
                if length >= 3 and body[2] >= 0x80:
                    self.load.refused += 1
                elif length >= 3 and body[2] == 0x10:
                    # "No matching subscribers": a success code, but the broker kept nothing.
                    self.load.unmatched += 1
            elif kind == 0x20:  # CONNACK
                if body[1] == 0:
                    self.connected.set()
                else:
                    self.load.connect_failures += 1
                    assert self.transport is not None
                    self.transport.close()
        self.buffer = buf
        self._on_acked(acked)

    def _on_acked(self, acked: int) -> None:
        if not acked:
            return
        self.in_flight -= acked
        self.load.acked += acked
        if self.load.flat_out:
            self.send(acked)

    def send(self, count: int) -> None:
        """Publish up to `count` messages, as far as the window and the run allow."""
        count = min(count, WINDOW - self.in_flight, self.load.remaining)
        if count <= 0 or self.transport is None or self.transport.is_closing():
            return
        packets = []
        now = time.time() * 1000
        for _ in range(count):
            self.next_mid = self.next_mid % 65535 + 1
            ts = max(now, self.last_ts + 0.01)
            self.last_ts = ts
            self.n += 1
            payload = b'{"ts":%.2f,"temp":21.5,"hum":40,"n":%d}' % (ts, self.n)
            body_len = len(self.topic) + 2 + 1 + len(payload)
            packets.append(
                b"\x32"
                + _varint(body_len)
                + self.topic
                + struct.pack("!H", self.next_mid)
                + b"\x00"
                + payload
            )
        self.in_flight += count
        self.load.sent += count
        self.transport.write(b"".join(packets))


class Load:
    def __init__(self, rate: float, duration: float, messages: int) -> None:
        self.rate = rate
        self.flat_out = rate <= 0
        self.duration = duration
        self.limit = messages  # 0: no limit but the duration
        self.sent = 0
        self.acked = 0
        self.refused = 0
        self.unmatched = 0
        self.connect_failures = 0
        self.lost = 0
        self.stopping = False
        self.deadline = float("inf")

    @property
    def remaining(self) -> int:
        if self.stopping or time.monotonic() >= self.deadline:
            return 0
        return self.limit - self.sent if self.limit else 1 << 30


async def open_devices(
    host: str, port: int, credentials: list[list[str]], load: Load
) -> list[Device]:
    loop = asyncio.get_running_loop()
    devices: list[Device] = []
    for start in range(0, len(credentials), 200):  # do not flood the broker's accept queue
        chunk = credentials[start : start + 200]
        made = await asyncio.gather(
            *(
                loop.create_connection(lambda d=d, p=p: Device(load, d, p), host, port)
                for d, p in chunk
            )
        )
        devices.extend(protocol for _transport, protocol in made)
        await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in devices)), 60)
    return devices


async def paced(devices: list[Device], load: Load) -> None:
    """Spread `rate` messages a second over the devices in 5 ms ticks, round robin, so that
    every device sends as a fleet would. When every window is full the broker is behind, and
    what is owed carries over: the achieved rate then shows it."""
    started = time.monotonic()
    turn = 0
    while load.remaining:
        await asyncio.sleep(0.005)
        owed = int(load.rate * (time.monotonic() - started)) - load.sent
        if owed <= 0:
            continue
        # At least a few messages per write: a write per message would cost the load
        # generator more CPU than the broker spends on the message.
        per_device = max(4, owed // len(devices))
        stalled = 0
        while owed > 0 and stalled < len(devices):
            device = devices[turn]
            turn = (turn + 1) % len(devices)
            before = load.sent
            device.send(min(per_device, owed))
            sent = load.sent - before
            owed -= sent
            stalled = 0 if sent else stalled + 1


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with open(args.credentials) as fh:
        credentials = json.load(fh)
    load = Load(args.rate, args.duration, args.messages)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    devices = await open_devices(args.host, args.port, credentials, load)
    connected_at = time.monotonic()
    if args.idle:
        await asyncio.sleep(args.idle)
    else:
        load.deadline = connected_at + args.duration if args.duration else float("inf")
        if load.flat_out:
            for device in devices:
                device.send(WINDOW)
            while load.remaining:
                await asyncio.sleep(0.05)
        else:
            await paced(devices, load)
        # Wait for the broker's PUBACKs of everything sent.
        drain_deadline = time.monotonic() + 60
        while load.acked < load.sent and time.monotonic() < drain_deadline:
            await asyncio.sleep(0.01)
    elapsed = time.monotonic() - connected_at
    load.stopping = True
    for device in devices:
        if device.transport is not None:
            device.transport.write(b"\xe0\x00")  # DISCONNECT
            device.transport.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "devices": len(devices),
        "sent": load.sent,
        "acked": load.acked,
        "refused": load.refused,
        "unmatched": load.unmatched,
        "connect_failures": load.connect_failures,
        "lost_connections": load.lost,
        "elapsed_s": round(elapsed, 3),
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials", required=True, help="JSON file: [[id, password], ...]")
    parser.add_argument("--rate", type=float, default=0, help="total msgs/s; 0 = flat out")
    parser.add_argument("--duration", type=float, default=0, help="seconds of publishing")
    parser.add_argument("--messages", type=int, default=0, help="total messages (0: no limit)")
    parser.add_argument("--idle", type=float, default=0, help="connect, then idle N seconds")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
