"""The collector's write-ahead spool (issue 17): durable on local disk before the PUBACK, drained
to the database afterwards.

Why: acknowledging only after the database commit leaves the backlog in the broker's memory,
where Mosquitto drops acknowledged messages past `max_queued_messages`. With the spool the
collector acknowledges a message once its batch is fsynced here, keeps taking messages off the
broker while the database is slow or down, and a drain task writes the spool to the database
in order (deduplicating as the writer does today) and then moves a durable cursor.

The contract (what the wiring may rely on):
- `append(records)` buffers; `sync()` / `await sync_async()` make everything appended so far
  durable with one fdatasync. Only after a sync returns may those records be acknowledged.
- `read(n)` hands out records in append order, from the read position forward, and only
  records that a sync has made durable: the drain never writes to the database a record that
  could vanish in a crash (and so never gets ahead of the PUBACKs).
- `commit(position)` persists the cursor (temp file, fsync, rename, directory fsync) and
  deletes the segments wholly before it. After a crash or restart, reading resumes at the last
  committed cursor: records after it are handed out again, in the same order, with the same
  bytes (at least once). The collector's record keeps the receive time (`encode_message`), so
  a replayed message without a device `ts` gets the same receive time and the database's
  dedup key absorbs it.
- One spool, one process: the directory is locked with flock; a second open fails with
  SpoolLocked naming the directory. Replicas each get a directory of their own.

On disk (spool_segments.py has the byte layout): append-only segment files named by a 20-digit
id, each a header and CRC32-framed records; a new segment is started once the current one
reaches `segment_bytes` (a record never straddles two). Rotation fsyncs the finished segment,
and the new segment's header and directory entry, before any record goes into it, so every
segment but the last is complete on disk: only the last one can have a torn tail.

Recovery on open scans the last segment (the others are checked by CRC as they are read):
- a partial frame or a bad frame with nothing valid after it is a torn tail, the part of an
  append that was not synced when the process or machine died: it is truncated (logged as a
  warning, with the bytes dropped). Nothing synced is lost, because a sync covers whole
  frames and the bad bytes lie after all of them.
- a bad frame followed by a good one is not what a crash leaves: SpoolCorrupt naming the file
  and offset, rather than guess. `open(..., repair=True)` truncates there anyway (logged as an
  error with the count of good-looking frames dropped). A power cut can in principle write an
  unsynced later page before an earlier one; then those frames were never acknowledged and
  repair loses nothing that was promised.
- a bad frame in any other segment, met while reading, raises SpoolCorrupt with file and
  offset: never skipped, since skipping would lose acknowledged messages without a trace.

Size: `full` is `size_bytes >= max_bytes`; the caller then stops reading from the broker (TCP
backpressure) and lets the drain catch up. `append` still accepts records up to
`max_bytes + slack_bytes`, so messages already in flight when the caller paused can be
spooled and acknowledged; past that it raises SpoolFull and appends nothing of the batch. The
caller should size the slack above what it can have in flight (receive maximum x payload
limit). `max_bytes` must be at least two segments: a partly consumed segment is kept until its
last record is committed, and the spool must be able to be full only while something is
pending, or the drain could never bring it back under the limit.

A failed write or fsync poisons the spool (every later call raises SpoolError): after an
fsync error the kernel may have dropped the dirty pages, and after a short write part of a
frame may be in the file, so nothing appended can be called durable any more. Reopening the
directory recovers what is on disk (a torn tail is truncated as after a crash).

Threads: a Spool belongs to one thread (the event loop). `sync_async` and `commit_async` run
only their fsyncs in a worker thread; the state they change is changed back on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, NoReturn

from paku_iot.collector.spool_segments import (
    CURSOR_NAME,
    FRAME_HEADER_SIZE,
    LOCK_NAME,
    SEGMENT_HEADER_SIZE,
    CursorState,
    SpoolCorrupt,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    decode_segment_header,
    encode_frames,
    encode_segment_header,
    find_valid_frame,
    fsync_directory,
    list_segments,
    parse_frames,
    read_cursor,
    segment_path,
    sync_data,
    write_cursor,
)

__all__ = [
    "Position",
    "Spool",
    "SpoolCorrupt",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "SpooledMessage",
    "decode_message",
    "encode_message",
]

log = logging.getLogger("paku_iot.collector.spool")

MiB = 1024 * 1024
DEFAULT_SEGMENT_BYTES = 64 * MiB
DEFAULT_SLACK_BYTES = 16 * MiB
# Appended frames are handed to the kernel in writes of about this size: large enough that a
# batch costs a few syscalls, small enough that the buffer never weighs on the process.
_WRITE_CHUNK = 1 * MiB
_READ_CHUNK = 1 * MiB


class Position(NamedTuple):
    """Where one handed-out record sits: `offset` is just past its frame in segment
    `segment`, `seq` is its sequence number (0 for the first record the spool ever took).
    `commit(position)` means: this record and every one before it are consumed.

    A tuple, not a frozen dataclass: one is made per message, and a tuple is built, compared
    and hashed in C (a frozen dataclass's __init__ alone cost about 1 us a message)."""

    segment: int
    offset: int
    seq: int


class Spool:
    """A directory of append-only segment files with a durable consumer cursor. Build it with
    `Spool.open`; the module docstring has the contract."""

    def __init__(self, directory: Path, lock_fd: int, max_bytes: int, segment_bytes: int) -> None:
        # Only `open` calls this; the state is filled in by its recovery.
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.slack_bytes = DEFAULT_SLACK_BYTES
        self._lock_fd: int | None = lock_fd
        self._sealed: dict[int, int] = {}  # finished segments -> their size
        self._write_id = 0
        self._write_fd = -1
        self._write_size = 0  # the write segment's size, counting the buffer
        self._buffer = bytearray()
        self._next_seq = 0
        self._durable = CursorState(0, 0, 0)  # the end of the last sync
        self._read = CursorState(0, 0, 0)
        self._committed = CursorState(0, 0, 0)
        self._read_fd_id: int | None = None
        self._read_fd = -1
        self._failed: str | None = None
        self._commit_lock: asyncio.Lock | None = None
        self._oldest_cache: tuple[int, int] | None = None  # (seq, appended at ms)

    # ---- opening and recovery -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        slack_bytes: int = DEFAULT_SLACK_BYTES,
        repair: bool = False,
    ) -> Spool:
        """Open (creating if need be) the spool in `directory`, lock it, and recover: drop a
        torn tail of the last segment, resume reading at the committed cursor."""
        if segment_bytes < SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE:
            raise ValueError(f"segment_bytes {segment_bytes} is too small")
        if max_bytes < 2 * segment_bytes:
            raise ValueError(
                f"max_bytes {max_bytes} must be at least two segments (2 x {segment_bytes})"
            )
        if slack_bytes < 0:
            raise ValueError("slack_bytes must not be negative")
        path = Path(directory)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = _lock_directory(path)
        spool = cls(path, lock_fd, max_bytes, segment_bytes)
        spool.slack_bytes = slack_bytes
        try:
            spool._recover(repair=repair)
        except BaseException:
            spool._close_fds()
            raise
        return spool

    def _recover(self, *, repair: bool) -> None:
        directory = self.directory
        cursor = read_cursor(directory)
        ids = list_segments(directory)
        if cursor is not None:
            # Segments wholly before the cursor were consumed; a crash between the cursor's
            # rename and their unlink leaves them behind.
            for segment_id in [i for i in ids if i < cursor.segment]:
                log.info("spool %s: removing consumed segment %d", directory, segment_id)
                segment_path(directory, segment_id).unlink()
            ids = [i for i in ids if i >= cursor.segment]
        if ids and ids != list(range(ids[0], ids[-1] + 1)):
            missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
            raise SpoolCorrupt(segment_path(directory, missing[0]), 0, "segment file is missing")
        # A last segment whose header never reached the disk: the crash came while it was
        # being created, before any record could go into it.
        while ids and self._torn_creation(ids[-1]):
            log.warning(
                "spool %s: removing segment %d, whose creation a crash interrupted",
                directory,
                ids[-1],
            )
            segment_path(directory, ids.pop()).unlink()
        if not ids:
            if cursor is not None:
                raise SpoolCorrupt(
                    directory / CURSOR_NAME,
                    0,
                    f"cursor names segment {cursor.segment} but no segment file exists",
                )
            self._create_segment(1, 0)
            cursor = CursorState(1, SEGMENT_HEADER_SIZE, 0)
            self._durable = self._committed = self._read = cursor
            return
        last = ids[-1]
        for segment_id in ids[:-1]:
            self._sealed[segment_id] = segment_path(directory, segment_id).stat().st_size
        first_seq, end, count = self._scan_last(last, repair=repair)
        self._write_id = last
        self._write_size = end
        self._next_seq = first_seq + count
        self._write_fd = os.open(segment_path(directory, last), os.O_WRONLY | os.O_APPEND)
        # What survived may have been in the page cache only (a killed process): make it as
        # durable as what was synced, since it is about to be handed out.
        sync_data(self._write_fd)
        self._durable = CursorState(last, end, self._next_seq)
        if cursor is None:
            first = ids[0]
            seq = self._segment_first_seq(first) if first != last else first_seq
            cursor = CursorState(first, SEGMENT_HEADER_SIZE, seq)
        if cursor.segment not in self._sealed and cursor.segment != last:
            raise SpoolCorrupt(
                directory / CURSOR_NAME, 0, f"cursor names missing segment {cursor.segment}"
            )
        if cursor.segment == last and (cursor.offset > end or cursor.next_seq > self._next_seq):
            raise SpoolCorrupt(
                directory / CURSOR_NAME,
                0,
                f"cursor (offset {cursor.offset}, record {cursor.next_seq}) is past the end of "
                f"segment {last} (offset {end}, record {self._next_seq})",
            )
        self._committed = self._read = cursor

    def _torn_creation(self, segment_id: int) -> bool:
        path = segment_path(self.directory, segment_id)
        with path.open("rb") as fh:
            head = fh.read(SEGMENT_HEADER_SIZE)
        # Shorter than a header, or a header of zeros (a size that reached the disk before
        # its data): never fsynced, so nothing was ever written after it.
        return len(head) < SEGMENT_HEADER_SIZE or head == bytes(SEGMENT_HEADER_SIZE)

    def _scan_last(self, segment_id: int, *, repair: bool) -> tuple[int, int, int]:
        """Check every frame of the last segment and truncate a torn tail. Returns the
        segment's first sequence number, its good length and its record count."""
        path = segment_path(self.directory, segment_id)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            # mmap rather than read: the segment can be 64 MiB, and the collector's memory is
            # budgeted in tens of MiB; mapped clean pages cost nothing to give back.
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
                first_seq = decode_segment_header(data[:SEGMENT_HEADER_SIZE], path, segment_id)
                found = parse_frames(data, SEGMENT_HEADER_SIZE, keep_bodies=False)
                count, end, problem = len(found.ends), found.stop, found.problem
                del found
                if end == size:
                    return first_seq, end, count
                following = find_valid_frame(data, end + 1) if problem is not None else None
            if following is not None:
                message = (
                    f"{problem}, and a good frame follows at byte {following}: not a torn "
                    "write; truncating would drop the records after it (open with "
                    "repair=True to truncate anyway)"
                )
                if not repair:
                    raise SpoolCorrupt(path, end, message)
                log.error("spool %s: repair: truncating at byte %d: %s", path, end, message)
            else:
                log.warning(
                    "spool %s: torn tail at byte %d (%s): %d bytes dropped (never synced)",
                    path,
                    end,
                    problem or "incomplete frame",
                    size - end,
                )
            os.ftruncate(fd, end)
            os.fsync(fd)
            return first_seq, end, count
        finally:
            os.close(fd)

    def _segment_first_seq(self, segment_id: int) -> int:
        path = segment_path(self.directory, segment_id)
        with path.open("rb") as fh:
            return decode_segment_header(fh.read(SEGMENT_HEADER_SIZE), path, segment_id)

    def _create_segment(self, segment_id: int, first_seq: int) -> None:
        """Start segment `segment_id`: its header and its name are durable before any record
        goes into it, so recovery can trust the header of every segment it finds."""
        path = segment_path(self.directory, segment_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _write_all(fd, encode_segment_header(segment_id, first_seq))
            os.fsync(fd)
            fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self._write_id = segment_id
        self._write_fd = fd
        self._write_size = SEGMENT_HEADER_SIZE

    # ---- writing --------------------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> None:
        """Add `records`, in order, after everything appended before. Not durable until the
        next `sync`. Raises SpoolFull (appending nothing) past `max_bytes + slack_bytes`, and
        ValueError for a record over the frame limit."""
        self._check_usable()
        if not records:
            return
        total = sum(len(record) for record in records) + FRAME_HEADER_SIZE * len(records)
        if self.size_bytes + total > self.max_bytes + self.slack_bytes:
            raise SpoolFull(
                f"spool {self.directory} is full: {self.size_bytes} bytes, limit "
                f"{self.max_bytes} + slack {self.slack_bytes}; {len(records)} records "
                f"({total} bytes) not appended"
            )
        appended_ms = time.time_ns() // 1_000_000
        if self._write_size + total <= self.segment_bytes:
            self._write_size += encode_frames(records, appended_ms, self._buffer)
            self._next_seq += len(records)
        else:
            self._append_rotating(records, appended_ms)
        if len(self._buffer) >= _WRITE_CHUNK:
            self._flush()

    def _append_rotating(self, records: Sequence[bytes], appended_ms: int) -> None:
        start = 0
        while start < len(records):
            room = self.segment_bytes - self._write_size
            stop = start
            used = 0
            while stop < len(records):
                size = FRAME_HEADER_SIZE + len(records[stop])
                if used + size > room:
                    break
                used += size
                stop += 1
            if stop == start:
                if self._write_size > SEGMENT_HEADER_SIZE:
                    self._rotate()
                    continue
                stop = start + 1  # a record larger than a segment gets one of its own
            self._write_size += encode_frames(records[start:stop], appended_ms, self._buffer)
            self._next_seq += stop - start
            start = stop

    def _rotate(self) -> None:
        """Finish the write segment and start the next one. The finished segment is fsynced
        here, so that only the last segment can ever have a torn tail."""
        self._flush()
        try:
            sync_data(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = -1
            self._sealed[self._write_id] = self._write_size
            self._create_segment(self._write_id + 1, self._next_seq)
        except OSError as exc:
            self._fail("rotating to a new segment", exc)

    def _flush(self) -> None:
        if self._buffer:
            try:
                _write_all(self._write_fd, self._buffer)
            except OSError as exc:
                # Part of the buffer may be in the file: writing it again would garble it.
                self._fail("write", exc)
            self._buffer.clear()

    def sync(self) -> None:
        """Make everything appended so far durable: one fdatasync (none if nothing is new)."""
        self._check_usable()
        mark = CursorState(self._write_id, self._write_size, self._next_seq)
        if mark == self._durable:
            return
        self._flush()
        try:
            sync_data(self._write_fd)
        except OSError as exc:
            self._fail("fsync", exc)
        self._durable = mark

    async def sync_async(self) -> None:
        """`sync` with the fdatasync in a worker thread, so the event loop keeps running
        (appends made meanwhile are not covered by this call)."""
        self._check_usable()
        mark = CursorState(self._write_id, self._write_size, self._next_seq)
        if mark == self._durable:
            return
        self._flush()
        # A duplicate descriptor: a rotation may close the write segment's own descriptor
        # while the thread still syncs it (the rotation syncs that segment itself).
        fd = os.dup(self._write_fd)
        try:
            await asyncio.to_thread(_sync_and_close, fd)
        except OSError as exc:
            self._fail("fsync", exc)
        if mark.next_seq > self._durable.next_seq:
            self._durable = mark

    def _fail(self, what: str, exc: OSError) -> NoReturn:
        self._failed = f"{what} failed ({exc}); reopen the spool to recover what is on disk"
        raise SpoolError(f"spool {self.directory}: {self._failed}") from exc

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise SpoolError(f"spool {self.directory} is unusable: {self._failed}")
        if self._lock_fd is None:
            raise SpoolError(f"spool {self.directory} is closed")

    # ---- reading --------------------------------------------------------------------------

    def read(self, max_records: int) -> list[tuple[Position, bytes]]:
        """Up to `max_records` durable records from the read position on, in order, with the
        position to commit once each is consumed. Raises SpoolCorrupt on a bad frame."""
        self._check_usable()
        out: list[tuple[Position, bytes]] = []
        while len(out) < max_records:
            here = self._read
            if here.next_seq >= self._durable.next_seq:
                break
            if here.segment == self._durable.segment:
                limit = self._durable.offset
            else:
                limit = self._sealed[here.segment]
            if here.offset >= limit:
                self._enter_next_segment(here)
                continue
            path, data = self._read_span(here.segment, here.offset, limit)
            found = parse_frames(data, limit=max_records - len(out))
            if not found.ends:
                if out:
                    break  # hand out the good records before it; the next read raises
                # Without a problem, only a frame cut off at the limit gets here (_read_span
                # reads at least one whole frame when the file has it).
                problem = found.problem or "frame runs past the end of the segment"
                raise SpoolCorrupt(path, here.offset + found.stop, problem)
            seq = here.next_seq
            for end, body in zip(found.ends, found.bodies, strict=True):
                out.append((Position(here.segment, here.offset + end, seq), body))
                seq += 1
            self._read = CursorState(here.segment, here.offset + found.stop, seq)
        return out

    def _read_span(self, segment_id: int, offset: int, limit: int) -> tuple[Path, bytes]:
        """Bytes of a segment from `offset`, about a chunk's worth but at least one frame."""
        path = segment_path(self.directory, segment_id)
        fd = self._reader(segment_id)
        data = os.pread(fd, min(limit - offset, _READ_CHUNK), offset)
        if len(data) >= FRAME_HEADER_SIZE:
            (length,) = struct.unpack_from("<I", data, 4)
            whole = FRAME_HEADER_SIZE + length
            if whole > len(data) and offset + whole <= limit:
                data = os.pread(fd, whole, offset)  # a frame larger than a chunk
        if len(data) < min(limit - offset, _READ_CHUNK):
            raise SpoolCorrupt(path, offset + len(data), "segment file is shorter than expected")
        return path, data

    def _enter_next_segment(self, here: CursorState) -> None:
        nxt = here.segment + 1
        first_seq = self._segment_first_seq(nxt)
        if first_seq != here.next_seq:
            raise SpoolCorrupt(
                segment_path(self.directory, nxt),
                0,
                f"segment starts at record {first_seq}, the one before ends at {here.next_seq}",
            )
        self._read = CursorState(nxt, SEGMENT_HEADER_SIZE, here.next_seq)

    def _reader(self, segment_id: int) -> int:
        if self._read_fd_id != segment_id:
            self._close_reader()
            self._read_fd = os.open(segment_path(self.directory, segment_id), os.O_RDONLY)
            self._read_fd_id = segment_id
        return self._read_fd

    def _close_reader(self) -> None:
        if self._read_fd_id is not None:
            os.close(self._read_fd)
            self._read_fd_id = None
            self._read_fd = -1

    def rewind(self) -> None:
        """Read again from the committed cursor (a drain that gave up on what it read)."""
        self._check_usable()
        self._read = self._committed

    # ---- committing ---------------------------------------------------------------------

    def commit(self, position: Position) -> None:
        """Persist that everything up to and including the record at `position` is consumed
        (fsyncs: call it once per drained batch, not per record), then delete segments wholly
        consumed. An older position than the committed one is a no-op."""
        self._check_usable()
        cursor = self._cursor_after(position)
        if cursor is None:
            return
        write_cursor(self.directory, cursor)
        self._committed = cursor
        self._delete_consumed()

    async def commit_async(self, position: Position) -> None:
        """`commit` with the cursor file's fsyncs in a worker thread."""
        self._check_usable()
        if self._commit_lock is None:
            self._commit_lock = asyncio.Lock()
        async with self._commit_lock:  # one temp file: one commit at a time
            cursor = self._cursor_after(position)
            if cursor is None:
                return
            await asyncio.to_thread(write_cursor, self.directory, cursor)
            if cursor.next_seq > self._committed.next_seq:
                self._committed = cursor
            self._delete_consumed()

    def _cursor_after(self, position: Position) -> CursorState | None:
        if position.seq < self._committed.next_seq:
            return None
        if position.seq >= self._read.next_seq:
            raise ValueError(f"{position} was not handed out by read() (yet)")
        cursor = CursorState(position.segment, position.offset, position.seq + 1)
        sealed_size = self._sealed.get(cursor.segment)
        if sealed_size is not None and cursor.offset >= sealed_size:
            # The end of a finished segment: the cursor moves to the next one, so that this
            # one can go.
            cursor = CursorState(cursor.segment + 1, SEGMENT_HEADER_SIZE, cursor.next_seq)
        return cursor

    def _delete_consumed(self) -> None:
        for segment_id in sorted(self._sealed):
            if segment_id >= self._committed.segment:
                break
            if self._read_fd_id == segment_id:
                self._close_reader()
            # No directory fsync: an unlink lost in a crash is redone by the next open.
            segment_path(self.directory, segment_id).unlink()
            del self._sealed[segment_id]

    # ---- bounds and metrics ---------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes of all segment files, counting appended bytes not yet written to them."""
        return sum(self._sealed.values()) + self._write_size

    @property
    def full(self) -> bool:
        """At or past `max_bytes`: stop taking messages from the broker until it is not."""
        return self.size_bytes >= self.max_bytes

    @property
    def pending_records(self) -> int:
        """Records appended and not yet committed (synced or not)."""
        return self._next_seq - self._committed.next_seq

    @property
    def pending_bytes(self) -> int:
        """Spool bytes after the committed cursor, framing and segment headers included."""
        # Segments before the cursor's are deleted at commit, so the cursor's offset is all
        # that is consumed of what remains.
        return self.size_bytes - self._committed.offset

    @property
    def unsynced_records(self) -> int:
        """Records appended since the last sync: not durable, not to be acknowledged yet."""
        return self._next_seq - self._durable.next_seq

    def oldest_pending_appended_ms(self) -> int | None:
        """When the oldest uncommitted record was appended (epoch ms), None if none is."""
        if self.pending_records == 0:
            return None
        seq = self._committed.next_seq
        if self._oldest_cache is not None and self._oldest_cache[0] == seq:
            return self._oldest_cache[1]
        segment, offset = self._committed.segment, self._committed.offset
        sealed_size = self._sealed.get(segment)
        if sealed_size is not None and offset >= sealed_size:
            segment, offset = segment + 1, SEGMENT_HEADER_SIZE
        if segment == self._write_id:
            self._flush()  # the record may still be in the buffer
        header = os.pread(self._reader(segment), FRAME_HEADER_SIZE, offset)
        if len(header) < FRAME_HEADER_SIZE:
            raise SpoolCorrupt(segment_path(self.directory, segment), offset, "missing frame")
        (appended_ms,) = struct.unpack_from("<Q", header, 8)
        self._oldest_cache = (seq, appended_ms)
        return int(appended_ms)

    @property
    def oldest_pending_age_s(self) -> float:
        """Seconds the oldest uncommitted record has waited (0.0 when none waits): the
        drain's lag, for metrics and /health."""
        appended_ms = self.oldest_pending_appended_ms()
        if appended_ms is None:
            return 0.0
        return max(0.0, time.time() - appended_ms / 1000)

    # ---- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Sync what was appended, close the files and release the directory."""
        if self._lock_fd is None:
            return
        try:
            if self._failed is None and self._write_fd >= 0:
                self.sync()
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        self._close_reader()
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _lock_directory(directory: Path) -> int:
    """Hold the directory's lock file for as long as the spool is open. flock, not a pid
    file: the kernel releases it when the process dies, however it dies."""
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise SpoolLocked(
            f"spool directory {directory} is in use by another process (pid {holder}); "
            "each collector needs a spool directory of its own"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # The holder's pid, for the message above; informative only, the flock is the lock.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _sync_and_close(fd: int) -> None:
    try:
        sync_data(fd)
    finally:
        os.close(fd)


# ---- the collector's record ---------------------------------------------------------------

_MESSAGE_VERSION = 1
_RETAINED = 0x01
_MESSAGE_HEAD = struct.Struct("<BBqH")  # version, flags, received at (epoch µs), topic length


class SpooledMessage(NamedTuple):
    """One MQTT message as the collector spools it. The receive time travels with it, so a
    message replayed after a crash is parsed with the same time as the first time. (A
    tuple: one is made per message on the drain's path.)"""

    topic: str
    payload: bytes
    retained: bool
    received_at_us: int


def encode_message(topic: str, payload: bytes, retained: bool, received_at_us: int) -> bytes:
    """The spool record of one message. Total for any topic str: surrogatepass keeps even a
    topic that is not valid UTF-8 (parse.py rejects it later, with the topic as it came)."""
    raw_topic = topic.encode("utf-8", "surrogatepass")
    if len(raw_topic) > 0xFFFF:
        raise ValueError(f"topic of {len(raw_topic)} bytes exceeds MQTT's 65535")
    head = _MESSAGE_HEAD.pack(
        _MESSAGE_VERSION, _RETAINED if retained else 0, received_at_us, len(raw_topic)
    )
    return b"".join((head, raw_topic, payload))


def decode_message(body: bytes) -> SpooledMessage:
    """The message in a spool record. SpoolError if the record is not one `encode_message`
    made (the CRC passed, so that is a version mismatch or a bug, not a disk error)."""
    if len(body) < _MESSAGE_HEAD.size:
        raise SpoolError(f"spool record of {len(body)} bytes is too short for a message")
    version, flags, received_at_us, topic_length = _MESSAGE_HEAD.unpack_from(body)
    if version != _MESSAGE_VERSION:
        raise SpoolError(f"spool record has message version {version}, not {_MESSAGE_VERSION}")
    start = _MESSAGE_HEAD.size
    end = start + topic_length
    if end > len(body):
        raise SpoolError("spool record's topic runs past its end")
    topic = body[start:end].decode("utf-8", "surrogatepass")
    return SpooledMessage(topic, body[end:], bool(flags & _RETAINED), received_at_us)
