"""The collector's write-ahead spool on the real filesystem: order, durability, recovery of torn
tails, corruption that must stop the reader, crashes, the cursor, rotation, bounds, the lock."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from paku_iot.collector.spool import (
    Position,
    Spool,
    SpoolCorrupt,
    SpooledMessage,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    decode_message,
    encode_message,
)
from paku_iot.collector.spool_segments import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    list_segments,
    segment_path,
)

SEG = 4096  # small segments, so that a few hundred records rotate several times
ROOT = Path(__file__).parents[2]


def rec(i: int) -> bytes:
    """Record i: its number, then filler whose length and bytes depend on i."""
    return f"record-{i:06d}|".encode() + bytes([i % 251]) * (150 + i % 100)


def open_spool(directory: Path, **kwargs: object) -> Spool:
    options: dict[str, object] = {"max_bytes": 1 << 30, "segment_bytes": SEG}
    options.update(kwargs)
    return Spool.open(directory, **options)  # type: ignore[arg-type]


def fill(spool: Spool, start: int, count: int, *, batch: int = 50) -> None:
    for first in range(start, start + count, batch):
        spool.append([rec(i) for i in range(first, min(first + batch, start + count))])
        spool.sync()


def read_all(spool: Spool) -> list[tuple[Position, bytes]]:
    out: list[tuple[Position, bytes]] = []
    while chunk := spool.read(37):  # an odd size: reads end mid-segment and mid-batch
        out.extend(chunk)
    return out


def drain_into(spool: Spool, out: list[tuple[Position, bytes]]) -> None:
    while chunk := spool.read(1000):
        out.extend(chunk)


def bodies(items: list[tuple[Position, bytes]]) -> list[bytes]:
    return [body for _, body in items]


def frame_offset(index_in_segment: int, sizes: list[int]) -> int:
    """Byte offset of frame `index_in_segment` in a segment whose frames have these bodies."""
    return SEGMENT_HEADER_SIZE + sum(FRAME_HEADER_SIZE + n for n in sizes[:index_in_segment])


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x40]))


# ---- order and durability -------------------------------------------------------------------


def test_round_trip_in_order(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s") as spool:
        fill(spool, 0, 500, batch=73)
        items = read_all(spool)
    assert bodies(items) == [rec(i) for i in range(500)]
    assert [p.seq for p, _ in items] == list(range(500))
    assert [p for p, _ in items] == sorted(p for p, _ in items)


def test_only_synced_records_are_handed_out(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s") as spool:
        spool.append([rec(0), rec(1)])
        assert spool.read(10) == []
        assert spool.unsynced_records == 2
        spool.sync()
        spool.append([rec(2)])
        assert bodies(spool.read(10)) == [rec(0), rec(1)]
        spool.sync()
        assert bodies(spool.read(10)) == [rec(2)]


async def test_sync_async_makes_records_readable(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s") as spool:
        for first in range(0, 300, 100):
            spool.append([rec(i) for i in range(first, first + 100)])
            await spool.sync_async()
        assert spool.unsynced_records == 0
        assert bodies(read_all(spool)) == [rec(i) for i in range(300)]


def test_message_codec_round_trip() -> None:
    cases = [
        SpooledMessage("paku/dev-1/telemetry", b'{"t": 1}', False, 1_780_000_000_123),
        SpooledMessage("paku/dev-1/state", b"", True, 0),
        SpooledMessage("paku/\udcff/odd", bytes(range(256)), False, -5),  # not UTF-8 at all
    ]
    for message in cases:
        body = encode_message(
            message.topic, message.payload, message.retained, message.received_at_us
        )
        assert decode_message(body) == message
    with pytest.raises(SpoolError, match="too short"):
        decode_message(b"\x01")
    with pytest.raises(SpoolError, match="version"):
        decode_message(b"\x09" + encode_message("t", b"", False, 1)[1:])


# ---- recovery -------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, FRAME_HEADER_SIZE - 1, FRAME_HEADER_SIZE + 3, -1])
def test_partial_last_frame_is_truncated(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "s"
    with open_spool(directory, segment_bytes=1 << 20) as spool:
        fill(spool, 0, 20)
    path = segment_path(directory, 1)
    last = frame_offset(19, [len(rec(i)) for i in range(20)])
    keep = last + (cut if cut > 0 else FRAME_HEADER_SIZE + len(rec(19)) + cut)
    os.truncate(path, keep)
    with caplog.at_level(logging.WARNING), open_spool(directory, segment_bytes=1 << 20) as spool:
        assert path.stat().st_size == last
        assert bodies(read_all(spool)) == [rec(i) for i in range(19)]
        # Appending goes on after the cut, with the sequence numbers following on.
        spool.append([rec(19)])
        spool.sync()
        [(position, body)] = spool.read(5)
        assert (position.seq, body) == (19, rec(19))
    assert f"torn tail at byte {last}" in caplog.text


@pytest.mark.parametrize(
    "garbage",
    [b"\x00" * 5000, b"\xff" * 7, os.urandom(3000)],
    ids=["zeros", "short", "random"],
)
def test_garbage_tail_is_truncated(tmp_path: Path, garbage: bytes) -> None:
    directory = tmp_path / "s"
    with open_spool(directory, segment_bytes=1 << 20) as spool:
        fill(spool, 0, 30)
        size = spool.size_bytes
    path = segment_path(directory, 1)
    with path.open("ab") as fh:
        fh.write(garbage)
    with open_spool(directory, segment_bytes=1 << 20) as spool:
        assert path.stat().st_size == size
        assert bodies(read_all(spool)) == [rec(i) for i in range(30)]


def test_a_bad_frame_followed_by_good_ones_stops_open(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory, segment_bytes=1 << 20) as spool:
        fill(spool, 0, 10)
    path = segment_path(directory, 1)
    bad = frame_offset(5, [len(rec(i)) for i in range(10)])
    flip_byte(path, bad + FRAME_HEADER_SIZE + 3)  # inside record 5's body
    with pytest.raises(SpoolCorrupt) as caught:
        open_spool(directory, segment_bytes=1 << 20)
    assert caught.value.path == path
    assert caught.value.offset == bad
    assert f"spool file {path} is corrupt at byte {bad}: frame CRC mismatch" in str(caught.value)
    assert path.stat().st_size > bad  # nothing was truncated
    # The operator's way out: truncate there, knowing what goes.
    with open_spool(directory, segment_bytes=1 << 20, repair=True) as spool:
        assert bodies(read_all(spool)) == [rec(i) for i in range(5)]


def test_corruption_in_a_finished_segment_stops_the_reader(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 200)
    assert len(list_segments(directory)) > 3
    # Segment 2's third record; segments are checked as they are read, not at open.
    path = segment_path(directory, 2)
    with open_spool(directory) as spool:
        first_two = []
        while not first_two or first_two[-1][0].segment < 2:
            first_two.extend(spool.read(1))
    seg2_start = first_two[-1][0].seq
    sizes = [len(rec(i)) for i in range(seg2_start, seg2_start + 3)]
    bad = frame_offset(2, sizes)
    flip_byte(path, bad + 2)  # the frame's magic
    with open_spool(directory) as spool:
        got: list[tuple[Position, bytes]] = []
        message = re.escape(f"{path} is corrupt at byte {bad}: bad frame magic")
        with pytest.raises(SpoolCorrupt, match=message):
            drain_into(spool, got)
        # Every good record before the damage was handed out first.
        assert bodies(got) == [rec(i) for i in range(seg2_start + 2)]
        with pytest.raises(SpoolCorrupt):  # and it stays stopped there
            spool.read(1000)


def test_sigkilled_writer_loses_no_synced_record(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    child = textwrap.dedent(
        """
        import sys
        from paku_iot.collector.spool import Spool
        from tests.collector.test_spool import rec
        spool = Spool.open(sys.argv[1], max_bytes=1 << 30, segment_bytes=65536)
        n = 0
        while True:
            spool.append([rec(i) for i in range(n, n + 97)])
            spool.sync()
            n += 97
            print(n, flush=True)
        """
    )
    synced = 0
    with subprocess.Popen(
        [sys.executable, "-c", child, str(directory)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                synced = int(line)
                if synced >= 20_000:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # What it reported between our last read and the kill counts too.
        rest = proc.stdout.read().split()
    synced = int(rest[-1]) if rest else synced
    assert synced >= 20_000, "the writer died before it synced enough"
    with open_spool(directory, segment_bytes=65536) as spool:
        items = read_all(spool)
    assert len(items) >= synced
    assert len(list_segments(directory)) > 10
    for index, (position, body) in enumerate(items):
        assert position.seq == index
        assert body == rec(index)


# ---- the cursor -----------------------------------------------------------------------------


def test_reopen_resumes_at_the_committed_cursor(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 100)
        items = spool.read(60)
        spool.commit(items[39][0])  # 60 read, 40 consumed
        assert spool.pending_records == 60
    with open_spool(directory) as spool:
        assert spool.pending_records == 60
        # At least once: the 20 read but not committed come again, in order.
        assert bodies(read_all(spool)) == [rec(i) for i in range(40, 100)]


def test_commit_deletes_consumed_segments(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 200)
        before = list_segments(directory)
        items = read_all(spool)
        middle = items[120][0]
        spool.commit(middle)
        assert list_segments(directory) == [i for i in before if i >= middle.segment]
        assert spool.pending_bytes == spool.size_bytes - middle.offset
        spool.commit(items[-1][0])
        assert list_segments(directory) == [before[-1]]
        assert spool.pending_records == 0
        assert spool.pending_bytes == 0
        assert spool.size_bytes == segment_path(directory, before[-1]).stat().st_size
        spool.commit(middle)  # an older position: nothing happens
        assert spool.pending_records == 0
    with open_spool(directory) as spool:
        assert spool.read(10) == []
        fill(spool, 200, 5)
        assert bodies(spool.read(10)) == [rec(i) for i in range(200, 205)]


def test_commit_at_a_finished_segments_end_moves_to_the_next(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 100)
        items = read_all(spool)
        last_of_first = max(p for p, _ in items if p.segment == 1)
        spool.commit(last_of_first)
        assert 1 not in list_segments(directory)
    with open_spool(directory) as spool:
        assert spool.read(1)[0][0].seq == last_of_first.seq + 1


async def test_commit_async(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 100)
        items = read_all(spool)
        await spool.commit_async(items[49][0])
        assert spool.pending_records == 50
    with open_spool(directory) as spool:
        assert spool.read(1)[0][0].seq == 50


def test_commit_refuses_a_position_not_handed_out(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s") as spool:
        fill(spool, 0, 10)
        spool.read(3)
        with pytest.raises(ValueError, match="not handed out"):
            spool.commit(Position(1, 10_000, 5))


def test_rewind_reads_again_from_the_cursor(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s") as spool:
        fill(spool, 0, 10)
        spool.commit(spool.read(3)[-1][0])
        spool.read(4)
        spool.rewind()
        assert bodies(spool.read(100)) == [rec(i) for i in range(3, 10)]


def test_segments_left_behind_a_commit_are_removed_at_open(tmp_path: Path) -> None:
    """A crash between the cursor's rename and the unlinks leaves consumed segments."""
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 100)
        items = read_all(spool)
        kept = {p: (segment_path(directory, p.segment)).read_bytes() for p, _ in items[:1]}
        spool.commit(items[-1][0])
    for position, data in kept.items():
        segment_path(directory, position.segment).write_bytes(data)
    with open_spool(directory) as spool:
        assert spool.read(10) == []
        assert list_segments(directory) == [items[-1][0].segment]


def test_a_missing_segment_is_reported(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 100)
    segment_path(directory, 2).unlink()
    with pytest.raises(SpoolCorrupt, match=r"00000000000000000002\.seg.*segment file is missing"):
        open_spool(directory)


# ---- rotation -------------------------------------------------------------------------------


def test_rotation_at_segment_bytes(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 300, batch=120)
        spool.append([b"L" * (3 * SEG)])  # larger than a segment: one of its own
        spool.append([rec(301)])
        spool.sync()
        items = read_all(spool)
    ids = list_segments(directory)
    assert ids == list(range(1, len(ids) + 1))
    names = sorted(p.name for p in directory.glob("*.seg"))
    assert names == [f"{i:020d}.seg" for i in ids]  # sorted by name is sorted by id
    sizes = [segment_path(directory, i).stat().st_size for i in ids]
    big = items[300][0].segment
    assert all(size <= SEG for i, size in zip(ids, sizes, strict=True) if i != big)
    assert [p.seq for p, _ in items if p.segment == big] == [300]
    assert items[301][0].segment == big + 1
    assert bodies(items) == [*(rec(i) for i in range(300)), b"L" * (3 * SEG), rec(301)]


def test_a_crash_while_creating_a_segment_is_undone(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory) as spool:
        fill(spool, 0, 50)
        last = list_segments(directory)[-1]
    segment_path(directory, last + 1).write_bytes(b"")
    segment_path(directory, last + 2).write_bytes(b"\0" * 32)
    with open_spool(directory) as spool:
        assert list_segments(directory)[-1] == last
        fill(spool, 50, 50)
        assert bodies(read_all(spool)) == [rec(i) for i in range(100)]


# ---- bounds and metrics ---------------------------------------------------------------------


def test_full_flag_and_slack(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s", max_bytes=2 * SEG, slack_bytes=1000) as spool:
        n = 0
        while not spool.full:
            spool.append([rec(n)])
            n += 1
        spool.sync()
        assert spool.size_bytes >= spool.max_bytes
        # Past full, the slack still takes what was in flight...
        spool.append([rec(n)])
        n += 1
        # ...and past the slack, a batch is refused whole.
        size = spool.size_bytes
        with pytest.raises(SpoolFull, match="is full"):
            spool.append([rec(n), rec(n + 1), b"x" * 1000])
        assert spool.size_bytes == size
        spool.sync()
        # Draining makes room again.
        spool.commit(read_all(spool)[-1][0])
        assert not spool.full
        spool.append([rec(n)])


def test_max_bytes_must_hold_two_segments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two segments"):
        Spool.open(tmp_path / "s", max_bytes=SEG, segment_bytes=SEG)


def test_pending_metrics(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s") as spool:
        assert (spool.pending_records, spool.pending_bytes, spool.oldest_pending_age_s) == (0, 0, 0)
        assert spool.oldest_pending_appended_ms() is None
        before_ms = time.time_ns() // 1_000_000
        spool.append([rec(0)])
        assert spool.pending_records == 1
        assert spool.pending_bytes == FRAME_HEADER_SIZE + len(rec(0))
        assert before_ms <= (spool.oldest_pending_appended_ms() or 0) <= before_ms + 1000
        first_ms = spool.oldest_pending_appended_ms()
        time.sleep(0.05)
        later_ms = time.time_ns() // 1_000_000
        fill(spool, 1, 99)
        assert 0.05 <= spool.oldest_pending_age_s < 5
        assert spool.oldest_pending_appended_ms() == first_ms
        items = read_all(spool)
        spool.commit(items[49][0])
        assert spool.pending_records == 50
        # Now the oldest is record 50, appended after the pause.
        assert (spool.oldest_pending_appended_ms() or 0) >= later_ms


# ---- the lock -------------------------------------------------------------------------------


def test_a_second_open_of_the_directory_fails(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with open_spool(directory):
        with pytest.raises(SpoolLocked, match=f"spool directory {directory} is in use") as caught:
            open_spool(directory)
        assert f"pid {os.getpid()}" in str(caught.value)
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from paku_iot.collector.spool import Spool\n"
                "Spool.open(sys.argv[1], max_bytes=1 << 30)",
                str(directory),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode != 0
        assert "SpoolLocked" in other.stderr
        assert str(directory) in other.stderr
    with open_spool(directory) as spool:  # free again once closed
        spool.append([b"x"])


def test_a_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append([b"x"])
