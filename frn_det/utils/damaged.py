"""Reading back the files frn-det wrote, defensively.

frn-det writes its files atomically (utils/atomic.py), so a crash never leaves half of
one; a full disk, an interrupted copy or a second machine can still damage them. A file
that does not parse (truncated, garbage, another version, a key missing) is named in a
warning and set aside: renamed `<name>.damaged-<time>`, never deleted (it may hold a
result), so that the caller can rebuild it. docs/reliability.md lists every file and
what happens when it is damaged.
"""
import logging
import os
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

logger = logging.getLogger("frn_det")
T = TypeVar("T")
DAMAGED = ".damaged-"  # <name>.damaged-<YYYYmmdd-HHMMSS>[-N]: a file set aside


class Damaged(ValueError):
    """Raised by a parser: the file parses, but it is not what frn-det writes (another
    version, a key missing, a value of the wrong type)."""


def damaged_name(path: Path) -> Path:
    """A free `<path>.damaged-<time>` name next to `path`."""
    path = Path(path)
    stem = f"{path.name}{DAMAGED}{time.strftime('%Y%m%d-%H%M%S')}"
    dest, n = path.with_name(stem), 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{stem}-{n}")
    return dest


def describe(error: BaseException) -> str:
    """An exception as "Type: message" (the message alone says little: 'Expecting value')."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def set_aside(path: Path, reason: str, then: str) -> Optional[Path]:
    """Rename a damaged file to `<path>.damaged-<time>` with a warning that names it, says
    what is wrong (`reason`) and what happens next (`then`); the new path, or None when
    another process set it aside first."""
    path = Path(path)
    dest = damaged_name(path)
    try:
        os.rename(path, dest)
    except FileNotFoundError:
        return None  # another process (a second worker or machine) set it aside already
    except OSError as e:
        logger.warning("%s is damaged (%s) and could not be set aside (%s); %s", path, reason, e.strerror or e, then)
        return None
    logger.warning("%s is damaged (%s); set aside as %s; %s", path, reason, dest.name, then)
    return dest


def read_or_set_aside(path: Path, parse: Callable[[Path], T], then: str, move: bool = True) -> Optional[T]:
    """`parse(path)`, or None when the file does not exist or does not parse.

    A file that does not parse (any exception of `parse`: JSON, zip, Unicode, `Damaged`,
    ...) is set aside with a warning (`then`: what the caller does instead, e.g.
    "rebuilding it"); with move=False, for readers that do not own the file (a report of
    someone's sweep), it is only named in the warning. An OSError with an error number
    (no permission, an I/O error) is raised: the file may be fine, and is kept.
    """
    path = Path(path)
    try:
        return parse(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno is not None:
            raise
        problem = e  # numpy and others report a bad file as an OSError without errno
    except Exception as e:  # noqa: BLE001  whatever the format's parser raises on a bad file
        problem = e
    if move:
        set_aside(path, describe(problem), then)
    else:
        logger.warning("%s is damaged (%s); %s", path, describe(problem), then)
    return None
