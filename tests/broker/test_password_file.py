"""The broker's password file under concurrent writers: two API processes rewrite it at the
same time (each after its own provisioning), and Mosquitto, reading it on a reload at any
moment, must only ever find one complete file."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from paku_iot.broker.files import render_password_file, write_password_file

WRITES = 150


def _entries(tag: str) -> list[tuple[str, str]]:
    # Large enough (about 250 KB) that one write takes many system calls and two writers
    # really interleave.
    return [(f"{tag}-{i:05d}", "$7$101$" + "A" * 16 + "$" + tag * 64) for i in range(3000)]


def _writer(path: str, tag: str, start: float) -> None:
    while time.time() < start:  # both processes begin together
        time.sleep(0.001)
    for _ in range(WRITES):
        write_password_file(Path(path), _entries(tag))


def test_concurrent_writers_from_two_processes_never_install_a_broken_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broker" / "passwd"
    complete = {render_password_file(_entries(tag)) for tag in ("a", "b")}
    write_password_file(path, _entries("a"))
    spawn = multiprocessing.get_context("spawn")
    start = time.time() + 2  # after both interpreters are up
    writers = [spawn.Process(target=_writer, args=(str(path), tag, start)) for tag in ("a", "b")]
    for writer in writers:
        writer.start()
    reads = 0
    broken: list[str] = []
    while any(w.is_alive() for w in writers):
        # What Mosquitto does on SIGHUP: open the file by name and read it whole.
        content = path.read_text()
        reads += 1
        if content not in complete:
            broken.append(f"{len(content)} bytes, {content.count(chr(10))} lines")
    for writer in writers:
        writer.join(60)
    assert [w.exitcode for w in writers] == [0, 0], "a writer failed (see its traceback)"
    assert not broken, f"{len(broken)} of {reads} reads found a broken file: {broken[:5]}"
    assert path.read_text() in complete
    assert os.listdir(path.parent) == ["passwd"], "temporary files were left behind"
    assert (path.stat().st_mode & 0o777) == 0o600
