"""An append-only history per run (events.jsonl): who started, resumed, skipped or ended it."""
import json
import os
import socket
import time
from pathlib import Path

EVENTS_FILE = "events.jsonl"


def log_event(run_dir: Path, event: str, **fields) -> None:
    line = json.dumps({"time": time.time(), "event": event, "pid": os.getpid(), "host": socket.gethostname(), **fields})
    # One O_APPEND write per line: lines from concurrent processes do not interleave.
    fd = os.open(Path(run_dir) / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_events(run_dir: Path):
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
