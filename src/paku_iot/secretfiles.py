"""Secrets that paku-iot generates on first run and keeps in files only its user can read."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def write_private_file(path: Path, content: str) -> None:
    """Write `content` to `path` atomically with mode 0600, so a crash never leaves half a file
    and no other user ever sees the secret, not even for a moment.

    Safe against concurrent writers (two API processes rewriting the broker's password file
    at once): each writes a temporary file of its own, created exclusively in the same
    directory, so one writer can never truncate or rename another's half-written file; the
    rename then installs one complete file or the other, never a mix."""
    # A directory made here holds secrets: only its owner may even list it.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp: a unique name, O_EXCL, mode 0600 from the start.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable: after a power cut the name points at the new file,
    not at nothing or the old one."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform that cannot open directories (Windows): best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_or_create_secret(path: Path, *, nbytes: int = 32) -> str:
    """Return the secret stored in `path`, generating a random one (mode 0600) if it is absent."""
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = secrets.token_urlsafe(nbytes)
    write_private_file(path, value + "\n")
    return value
