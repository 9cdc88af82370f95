"""Append-only JSON-lines files (a run's events.jsonl, Detectron2's per-iteration log).

A write cut short (a kill during the write, a full disk, an interrupted copy) leaves a
last line without its newline; the next append would glue its line to it and every later
reader would stumble on the pair. Appenders therefore repair such a torn tail first: the
partial line is moved into `<name>.damaged-<time>` (never dropped unseen) and cut off.
Readers skip lines that do not parse, with a warning naming the file and the lines.
"""
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import List

from .atomic import write_atomic
from .damaged import damaged_name

logger = logging.getLogger("frn_det")


def _repair_locked(fd: int, path: Path) -> None:
    """Cut a partial last line off the file open (read/write, flock held) as fd."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    # The start of the partial line: after the last newline (the file's start if none).
    start, block = 0, 1 << 16
    end = size
    while end > 0:
        begin = max(0, end - block)
        chunk = os.pread(fd, end - begin, begin)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            start = begin + newline + 1
            break
        end = begin
    fragment = os.pread(fd, size - start, start)
    dest = damaged_name(path)
    write_atomic(dest, lambda tmp: Path(tmp).write_bytes(fragment))
    os.ftruncate(fd, start)
    logger.warning("%s ended in a partial line (%d bytes, a write cut short); moved it to %s and cut it off",
                   path, len(fragment), dest.name)


def repair_torn_tail(path: Path) -> None:
    """Before appending to a JSON-lines file that exists: repair a torn last line."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _repair_locked(fd, path)
    finally:
        os.close(fd)  # releases the lock


def append_json_line(path: Path, record: dict) -> None:
    """One line, in one O_APPEND write under an exclusive flock: lines of concurrent
    processes never interleave, and a torn last line left by a killed writer is repaired."""
    path = Path(path)
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _repair_locked(fd, path)
        os.write(fd, line)
    finally:
        os.close(fd)


def read_json_lines(path: Path) -> List[dict]:
    """The JSON objects of a JSON-lines file ([] when it is missing); lines that are not
    JSON objects are skipped with one warning that names the file and the lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records, bad = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        lines = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        logger.warning("%s: skipped line(s) %s, not JSON objects (damaged)", path, lines)
    return records
