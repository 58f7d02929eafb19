"""Running Mosquitto as a child process for `paku-iot dev`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path

from paku_iot.broker.files import BrokerPaths
from paku_iot.exceptions import SettingsError
from paku_iot.netcheck import wait_for_port

log = logging.getLogger("paku_iot.broker")

# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH;
# Homebrew in its own prefix.
_SEARCH_DIRS = (
    "/usr/sbin",
    "/usr/local/sbin",
    "/opt/homebrew/sbin",
    "/usr/local/opt/mosquitto/sbin",
)

INSTALL_HINT = (
    "install Mosquitto: `sudo apt-get install mosquitto` (Debian/Ubuntu), "
    "`brew install mosquitto` (macOS), or set PAKU_MOSQUITTO_BIN to its path"
)


def find_mosquitto(explicit: str | None) -> str:
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise SettingsError(f"PAKU_MOSQUITTO_BIN={explicit} is not an executable file")
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SettingsError(f"the mosquitto binary was not found: {INSTALL_HINT}")


def stop_leftover_broker(paths: BrokerPaths) -> None:
    """A broker left running by a dev session that was killed would hold the port: stop it,
    but only if it really is a mosquitto started with this directory's config."""
    try:
        pid = int(paths.pid_file.read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return
    if "mosquitto" in cmdline and str(paths.config) in cmdline:
        log.warning("stopping a broker left over from an earlier run (pid %d)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


class MosquittoProcess:
    def __init__(self, binary: str, paths: BrokerPaths, host: str, port: int) -> None:
        self._binary = binary
        self._paths = paths
        self._host = host
        self._port = port
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        stop_leftover_broker(self._paths)
        log_file = self._paths.root / "mosquitto.stderr"
        with log_file.open("ab") as stderr:
            # Its own session: a Ctrl-C in the terminal reaches only us, and we stop the
            # broker after the collector has written (and acknowledged) what it holds.
            self._process = await asyncio.create_subprocess_exec(
                self._binary,
                "-c",
                str(self._paths.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        connect_host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        if not await wait_for_port(connect_host, self._port, timeout=10):
            await self.stop()
            raise SettingsError(
                f"mosquitto did not start listening on {self._host}:{self._port}; "
                f"see {self._paths.log_file} and {log_file}"
            )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()
