"""Secrets that paku-iot generates on first run and keeps in files only its user can read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private_file(path: Path, content: str) -> None:
    """Write `content` to `path` atomically with mode 0600, so a crash never leaves half a file
    and no other user ever sees the secret, not even for a moment."""
    # A directory made here holds secrets: only its owner may even list it.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_or_create_secret(path: Path, *, nbytes: int = 32) -> str:
    """Return the secret stored in `path`, generating a random one (mode 0600) if it is absent."""
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = secrets.token_urlsafe(nbytes)
    write_private_file(path, value + "\n")
    return value
