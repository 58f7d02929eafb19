"""What the containers run, run here as plain processes: the broker container's
compose/mosquitto/entrypoint.sh (Mosquitto and its watcher, in a process group of their own)
and the compose files' broker-init step."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from paku_iot.broker.process import find_mosquitto
from tests.support import free_port, require, wait_for_port_sync
from tests.support.compose import BROKER_MOUNT, ENTRYPOINT, load_compose, services


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass
class EntrypointBroker:
    """Mosquitto as the broker container runs it: compose/mosquitto/entrypoint.sh, here with
    a shell of this machine and in its own process group (mosquitto and its watcher)."""

    process: subprocess.Popen[bytes]
    port: int  # the devices' plain listener
    backend_port: int
    broker_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the group (as `docker stop` reaches PID 1), then make sure the watcher
        is gone too."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        deadline = time.monotonic() + 10
        while group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftover = group_members(self.process.pid)
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        assert not leftover, f"processes left behind: {leftover}\n{self.output()}"


def broker_config(
    out: Path, port: int, tmp_path: Path, compose: str = "dev", backend_port: int | None = None
) -> int:
    """The compose files' broker-init step, on this machine: listening on the loopback only,
    and running as this user (there is no `mosquitto` user to share files with here)."""
    command = services(load_compose(compose))["broker-init"]["command"]
    args = [
        "127.0.0.1" if arg == "0.0.0.0" else getpass.getuser() if arg == "mosquitto" else arg
        for arg in command
    ]
    args = [str(out) if arg == BROKER_MOUNT else arg for arg in args]
    backend_port = backend_port or free_port()
    ports = {"PAKU_MQTT_PORT": str(port), "PAKU_MQTT_BACKEND_PORT": str(backend_port)}
    result = run_command(args, ports, tmp_path)
    assert result.returncode == 0, result.stderr
    return backend_port


def venv_tool(name: str) -> str:
    """A console script as the image's PATH (/opt/paku/bin first) finds it: in this venv."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def run_command(
    command: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool(command[0]), *command[1:]],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_entrypoint(
    tmp_path: Path,
    *,
    shell: list[str],
    path: str | None = None,
    extra_env: dict[str, str] | None = None,
    compose: str = "dev",
    port: int | None = None,
    backend_port: int | None = None,
) -> EntrypointBroker:
    try:
        mosquitto = find_mosquitto(None)
    except Exception as exc:
        require(False, str(exc))
        raise
    port = port or free_port()
    broker_dir = tmp_path / "broker"
    backend_port = broker_config(broker_dir, port, tmp_path, compose, backend_port)
    log = tmp_path / "entrypoint.log"
    env = {
        **os.environ,
        "PAKU_BROKER_DIR": str(broker_dir),
        "MOSQUITTO_RUN_DIR": str(tmp_path / "run"),
        "MOSQUITTO_BIN": mosquitto,
        **(extra_env or {}),
    }
    if path is not None:
        env["PATH"] = path
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*shell, str(ENTRYPOINT)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: mosquitto (exec'd) and the watcher
        )
    broker = EntrypointBroker(process, port, backend_port, broker_dir, log)
    if not wait_for_port_sync(port):
        broker.stop()
        pytest.fail(f"mosquitto did not start:\n{broker.output()}")
    return broker
