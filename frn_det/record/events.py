"""An append-only history per run (events.jsonl): who started, resumed, skipped or ended it."""
import os
import socket
import time
from pathlib import Path

from ..utils.jsonlines import append_json_line, read_json_lines

EVENTS_FILE = "events.jsonl"


def log_event(run_dir: Path, event: str, **fields) -> None:
    append_json_line(Path(run_dir) / EVENTS_FILE,
                     {"time": time.time(), "event": event, "pid": os.getpid(), "host": socket.gethostname(), **fields})


def read_events(run_dir: Path):
    """The run's events; a damaged line is skipped with a warning naming the file."""
    return read_json_lines(Path(run_dir) / EVENTS_FILE)
