"""Firmware images on disk, named by their SHA-256: the same bytes are stored once."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from paku_iot.exceptions import InvalidInput

CHUNK = 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class FirmwareFiles:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self._root = root
        self._max_bytes = max_bytes

    def path(self, sha256: str) -> Path | None:
        """The image with this digest, or None (also for anything that is not a digest)."""
        if not _SHA256_RE.fullmatch(sha256):
            return None
        path = self._root / f"{sha256}.bin"
        return path if path.is_file() else None

    def store(
        self, source: BinaryIO, accept: Callable[[str, int], None] | None = None
    ) -> tuple[str, int]:
        """Copy `source` in chunks into the store, hashing as it goes; returns (sha256, size).
        `accept(sha256, size)` may refuse the image by raising before it is kept (a signature
        that does not match it). Blocking: run it in a thread. Nothing is left behind when
        the image is refused."""
        self._root.mkdir(parents=True, exist_ok=True)
        partial = self._root / f".upload-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise InvalidInput(
                            f"the image is over the {self._max_bytes}-byte limit "
                            "(PAKU_OTA_MAX_FIRMWARE_BYTES)",
                            code="firmware_too_large",
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise InvalidInput("the firmware file is empty", code="firmware_empty")
            sha256 = digest.hexdigest()
            if accept is not None:
                accept(sha256, size)
            os.replace(partial, self._root / f"{sha256}.bin")
            return sha256, size
        finally:
            partial.unlink(missing_ok=True)
