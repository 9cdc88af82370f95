"""Atomic file writes: readers (and a re-run after kill -9) never see a half-written file."""
import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomic(path: Path, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` on a temp file in the same folder, then os.replace it into place.

    Same folder so that os.replace is a rename on one filesystem (atomic).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; report files should be readable like others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    def writer(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return write_atomic(path, writer)


def write_json_atomic(path: Path, data) -> Path:
    import json

    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
