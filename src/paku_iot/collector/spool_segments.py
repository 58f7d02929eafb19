"""The spool's on-disk format: segment files of CRC-framed records, and the cursor file.

Layout of one spool directory (collector/spool.py says how they are used):

    spool.lock                      held with flock(LOCK_EX) by the one process using the spool
    cursor                          where the consumer is: written to a temp file, fsynced,
                                    renamed over this name, directory fsynced
    00000000000000000001.seg        segments, named by id: 20 digits, so that the names sort
    00000000000000000002.seg        as the numbers do

A segment starts with a 32-byte header, then frames back to back:

    header  "PAKUSEG1" | segment id u64 | first record sequence number u64 | CRC32 u32 | 4 x 0
    frame   "PKR1" | body length u32 | appended at (epoch ms) u64 | CRC32 u32 | body

All integers are little-endian. A frame's CRC32 covers its first 16 bytes (magic, length, time)
and its body, so a torn length is caught like a torn body. The per-frame magic costs 4 bytes
a record and buys one thing: after a bad frame, `bytes.find` can look for a later good frame at
C speed, which is how a torn tail is told from damage in the middle (see `find_valid_frame`).
The append time is the spool's own: it gives the age of the oldest pending record without
knowing what the opaque bodies hold.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from paku_iot.exceptions import PakuError

SEGMENT_SUFFIX = ".seg"
CURSOR_NAME = "cursor"
LOCK_NAME = "spool.lock"

SEGMENT_MAGIC = b"PAKUSEG1"
_SEGMENT_HEADER = struct.Struct("<8sQQI4x")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size  # 32

FRAME_MAGIC = b"PKR1"
_FRAME_PREFIX = struct.Struct("<4sIQ")  # magic, length, appended at: what the CRC covers first
_FRAME_HEADER = struct.Struct("<4sIQI")
FRAME_HEADER_SIZE = _FRAME_HEADER.size  # 20
_CRC = struct.Struct("<I")

# Far above any MQTT payload the collector accepts, far below what would make a garbage
# length field send the reader allocating gigabytes.
MAX_RECORD_BYTES = 16 * 1024 * 1024

_CURSOR_MAGIC = b"PAKUCUR1"
_CURSOR = struct.Struct("<8sQQQI")  # magic, segment, offset, next sequence number, CRC32


class SpoolError(PakuError):
    """The spool cannot do what was asked (its directory, its files, its limits)."""

    code = "spool_error"


class SpoolCorrupt(SpoolError):
    """A spool file holds bytes that are not what the spool wrote, somewhere a crash cannot
    explain. Raised with the file and offset; never skipped silently."""

    code = "spool_corrupt"

    def __init__(self, path: Path, offset: int, problem: str) -> None:
        super().__init__(f"spool file {path} is corrupt at byte {offset}: {problem}")
        self.path = path
        self.offset = offset
        self.problem = problem


class SpoolLocked(SpoolError):
    """Another process (or another Spool in this one) has the directory."""

    code = "spool_locked"


class SpoolFull(SpoolError):
    """An append would take the spool past its size limit and slack."""

    code = "spool_full"


def segment_name(segment_id: int) -> str:
    return f"{segment_id:020d}{SEGMENT_SUFFIX}"


def segment_path(directory: Path, segment_id: int) -> Path:
    return directory / segment_name(segment_id)


def list_segments(directory: Path) -> list[int]:
    """The ids of the segment files in `directory`, in order. Anything else (the lock, the
    cursor, a stray temp file) is not a segment."""
    ids = []
    for entry in os.scandir(directory):
        name = entry.name
        stem = name[: -len(SEGMENT_SUFFIX)]
        if name.endswith(SEGMENT_SUFFIX) and len(stem) == 20 and stem.isdigit():
            ids.append(int(stem))
    return sorted(ids)


def encode_segment_header(segment_id: int, first_seq: int) -> bytes:
    head = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, segment_id, first_seq, 0)
    crc = zlib.crc32(head[:24])
    return _SEGMENT_HEADER.pack(SEGMENT_MAGIC, segment_id, first_seq, crc)


def decode_segment_header(data: bytes, path: Path, segment_id: int) -> int:
    """The first record sequence number a segment header names; SpoolCorrupt if it is not a
    header this spool wrote for this segment."""
    if len(data) < SEGMENT_HEADER_SIZE:
        raise SpoolCorrupt(path, len(data), "segment header is incomplete")
    magic, found_id, first_seq, crc = _SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise SpoolCorrupt(path, 0, "not a spool segment (bad magic)")
    if zlib.crc32(data[:24]) != crc:
        raise SpoolCorrupt(path, 0, "segment header CRC mismatch")
    if found_id != segment_id:
        raise SpoolCorrupt(path, 0, f"header names segment {found_id}, file name {segment_id}")
    return int(first_seq)


def encode_frames(bodies: Sequence[bytes], appended_ms: int, out: bytearray) -> int:
    """Append the frames of `bodies` to `out`; return the bytes added. Raises ValueError for a
    body over MAX_RECORD_BYTES before adding anything."""
    for body in bodies:
        if len(body) > MAX_RECORD_BYTES:
            raise ValueError(f"spool record of {len(body)} bytes exceeds {MAX_RECORD_BYTES}")
    start = len(out)
    pack_prefix = _FRAME_PREFIX.pack
    pack_crc = _CRC.pack
    crc32 = zlib.crc32
    for body in bodies:
        prefix = pack_prefix(FRAME_MAGIC, len(body), appended_ms)
        out += prefix
        out += pack_crc(crc32(body, crc32(prefix)))
        out += body
    return len(out) - start


def frame_size(body_length: int) -> int:
    return FRAME_HEADER_SIZE + body_length


@dataclass(slots=True)
class Parsed:
    """What `parse_frames` found in a buffer.

    `ends[i]` is the buffer offset just past frame i, `bodies[i]` its body (only when bodies
    were asked for). `stop` is where parsing stopped; `problem` says why when the bytes there
    are not a good frame (None: the buffer ended, possibly mid-frame, or `limit` was reached).
    """

    ends: list[int]
    bodies: list[bytes]
    times: list[int]
    stop: int
    problem: str | None


def parse_frames(
    buf: bytes | bytearray | memoryview | mmap.mmap,
    start: int = 0,
    *,
    limit: int | None = None,
    keep_bodies: bool = True,
) -> Parsed:
    """Parse frames from `buf[start:]` until it ends, `limit` frames are found, or a frame is
    bad (wrong magic, absurd length, CRC mismatch). A frame cut off by the buffer's end is not
    bad here: the caller knows whether more bytes follow."""
    view = memoryview(buf)
    size = len(view)
    ends: list[int] = []
    bodies: list[bytes] = []
    times: list[int] = []
    unpack = _FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    pos = start
    problem: str | None = None
    while limit is None or len(ends) < limit:
        if size - pos < FRAME_HEADER_SIZE:
            break
        magic, length, appended_ms, crc = unpack(view, pos)
        if magic != FRAME_MAGIC:
            problem = "bad frame magic"
            break
        if length > MAX_RECORD_BYTES:
            problem = f"frame length {length} exceeds {MAX_RECORD_BYTES}"
            break
        end = pos + FRAME_HEADER_SIZE + length
        if end > size:
            break
        body = view[pos + FRAME_HEADER_SIZE : end]
        if crc32(body, crc32(view[pos : pos + 16])) != crc:
            problem = "frame CRC mismatch"
            break
        ends.append(end)
        times.append(appended_ms)
        if keep_bodies:
            bodies.append(bytes(body))
        pos = end
    return Parsed(ends, bodies, times, pos, problem)


def find_valid_frame(buf: bytes | mmap.mmap, start: int) -> int | None:
    """The offset of the first complete, CRC-correct frame at or after `start`, or None.

    A crash leaves bad bytes only after everything that was synced, so whatever follows them
    cannot be a good frame unless the damage is somewhere else than at the tail. Random bytes
    pass the magic and the CRC together about once in 2**64."""
    pos = buf.find(FRAME_MAGIC, start)
    while pos != -1:
        found = parse_frames(buf, pos, limit=1, keep_bodies=False)
        if found.ends:
            return pos
        pos = buf.find(FRAME_MAGIC, pos + 1)
    return None


@dataclass(frozen=True, slots=True)
class CursorState:
    """The consumer's durable position: the next record to hand out is at `offset` in
    `segment` and has sequence number `next_seq`."""

    segment: int
    offset: int
    next_seq: int


def encode_cursor(cursor: CursorState) -> bytes:
    head = _CURSOR.pack(_CURSOR_MAGIC, cursor.segment, cursor.offset, cursor.next_seq, 0)
    crc = zlib.crc32(head[:32])
    return _CURSOR.pack(_CURSOR_MAGIC, cursor.segment, cursor.offset, cursor.next_seq, crc)


def decode_cursor(data: bytes, path: Path) -> CursorState:
    if len(data) != _CURSOR.size:
        raise SpoolCorrupt(path, 0, f"cursor file is {len(data)} bytes, not {_CURSOR.size}")
    magic, segment, offset, next_seq, crc = _CURSOR.unpack(data)
    if magic != _CURSOR_MAGIC or zlib.crc32(data[:32]) != crc:
        raise SpoolCorrupt(path, 0, "cursor file has a bad magic or CRC")
    return CursorState(segment, offset, next_seq)


def write_cursor(directory: Path, cursor: CursorState) -> None:
    """Replace the cursor file atomically: a crash leaves the old cursor or the new one, never
    half of one. Three syncs (file, rename, directory): a commit is worth batching."""
    path = directory / CURSOR_NAME
    tmp = directory / (CURSOR_NAME + ".tmp")
    # One writer only (the directory lock), so a fixed temp name is safe; O_TRUNC clears a
    # leftover from a crash between write and rename.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, encode_cursor(cursor))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(directory)


def read_cursor(directory: Path) -> CursorState | None:
    path = directory / CURSOR_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode_cursor(data, path)


def fsync_directory(directory: Path) -> None:
    """Make a create, rename or truncate of an entry durable, not only the file's bytes."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_data(fd: int) -> None:
    """fdatasync where there is one: the data and the size, without the mtime's extra write."""
    fdatasync = getattr(os, "fdatasync", None)
    if fdatasync is not None:
        fdatasync(fd)
    else:  # macOS
        os.fsync(fd)
