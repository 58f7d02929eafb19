"""Telling a running Mosquitto to re-read its password and ACL files (SIGHUP).

On reload Mosquitto re-checks every live connection against the new files and drops the
clients whose credentials changed or vanished, which is how a deleted device is cut off.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("paku_iot.broker")


# How long a reload waits for a broker that is still starting to handle SIGHUP.
HANDLER_WAIT_S = 5.0


def handles_sighup(pid: int) -> bool:
    """Whether the process has a SIGHUP handler installed (/proc's SigCgt mask; True where
    /proc cannot tell). Mosquitto installs its handler only after opening its listeners, and
    a SIGHUP before that ends it: the signal's default action."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split(":", 1)[1].strip(), 16) & (1 << (signal.SIGHUP - 1)))
    return True


def reload_broker(pid_file: Path, wait_s: float = HANDLER_WAIT_S) -> bool:
    """Send SIGHUP to the broker named by `pid_file`. False (and a log line) when it cannot:
    no pid file, a stale pid, or a broker owned by another user (compose: a watcher reloads).

    A broker that has just started is given up to `wait_s` to install its SIGHUP handler
    (a few milliseconds normally; this blocks for that long), and is not signalled without
    one: it reads the files when it starts anyway, except for a change made in that gap."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        log.warning("broker not reloaded: no readable pid file at %s", pid_file)
        return False
    comm = Path(f"/proc/{pid}/comm")
    if comm.exists() and comm.read_text(encoding="ascii", errors="replace").strip() != "mosquitto":
        # In containers the pid file comes from the broker's own PID namespace: pid 1 there is
        # not mosquitto here. Signalling it would hit whatever runs under that number.
        # Expected under compose, where the broker container's watcher reloads: not a warning.
        log.info("broker not signalled: process %d is not mosquitto (a watcher reloads)", pid)
        return False
    deadline = time.monotonic() + wait_s
    while not handles_sighup(pid):
        if time.monotonic() > deadline:
            log.warning("broker not reloaded: process %d does not handle SIGHUP yet", pid)
            return False
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.warning("broker not reloaded: no process %d (stale %s)", pid, pid_file)
        return False
    except PermissionError:
        log.warning("broker not reloaded: not allowed to signal process %d", pid)
        return False
    return True
