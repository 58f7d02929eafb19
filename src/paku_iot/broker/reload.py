"""Telling a running Mosquitto to re-read its password and ACL files (SIGHUP).

On reload Mosquitto re-checks every live connection against the new files and drops the
clients whose credentials changed or vanished, which is how a deleted device is cut off.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("paku_iot.broker")


def reload_broker(pid_file: Path) -> bool:
    """Send SIGHUP to the broker named by `pid_file`. False (and a log line) when it cannot:
    no pid file, a stale pid, or a broker owned by another user (compose: a watcher reloads)."""
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
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.warning("broker not reloaded: no process %d (stale %s)", pid, pid_file)
        return False
    except PermissionError:
        log.warning("broker not reloaded: not allowed to signal process %d", pid)
        return False
    return True
