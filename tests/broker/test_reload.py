"""Reloading the broker (SIGHUP) right after it started: Mosquitto installs its SIGHUP handler
only after it has opened its listeners, and a SIGHUP before that ends the process (the
signal's default action). Provisioning a device just after `paku-iot dev` started the broker
did exactly that on a busy machine."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from paku_iot.broker.reload import reload_broker

# A process that calls itself mosquitto (so reload_broker will signal it), listens for a
# while with SIGHUP at its default action, then handles it and counts reloads.
LATE_HANDLER = """
import ctypes, signal, sys, time
ctypes.CDLL(None).prctl(15, b"mosquitto", 0, 0, 0)  # PR_SET_NAME: /proc/<pid>/comm
print("started", flush=True)
time.sleep(float(sys.argv[1]))
reloads = []
signal.signal(signal.SIGHUP, lambda *_: reloads.append(1))
print("handling", flush=True)
deadline = time.monotonic() + 10
while not reloads and time.monotonic() < deadline:
    time.sleep(0.01)
print("reloaded" if reloads else "never reloaded", flush=True)
"""


@contextlib.contextmanager
def late_handler(handler_after_s: float, pid_file: Path) -> Iterator[subprocess.Popen[str]]:
    """The stand-in broker, started and named in `pid_file`; killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-c", LATE_HANDLER, str(handler_after_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        pid_file.write_text(f"{process.pid}\n")
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()


def test_a_broker_still_starting_is_reloaded_once_it_handles_sighup(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    with late_handler(0.5, pid_file) as process:
        started = time.monotonic()
        assert reload_broker(pid_file)
        assert time.monotonic() - started >= 0.3  # it waited for the handler
        out, _ = process.communicate(timeout=15)
        assert process.returncode == 0, f"killed by signal {-process.returncode}"
        assert out.split() == ["handling", "reloaded"]


def test_a_broker_that_never_handles_sighup_is_not_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    with late_handler(30, pid_file) as process:
        assert not reload_broker(pid_file, wait_s=0.5)
        assert process.poll() is None, "the reload killed it"
