"""frn-det's C++ CPU library (csrc/: FRN(+TLU), TLU, EvoNorm-B0/S0), built once per machine.

The library is built with `torch.utils.cpp_extension.load` and kept in
`$FRN_DET_CACHE/torch_extensions/` (default `~/.cache/frn_det/torch_extensions/`), in a
folder whose name hashes the sources, the flags, the Python and torch versions and the
CPU, so that one cache can serve several environments, machines and checkouts. Later
processes load the built library without running ninja.

How a build goes (`_build`), so that nothing but a real compile or link error outlives the
process that met it:
  - a finished library sits in that folder as `frn_det_cpu.built.so`, put there by one
    atomic rename: a process finds it complete or not at all;
  - one process builds at a time: it holds an flock on `build.flock`, which the kernel
    releases when the process ends, however it ends (a killed builder never blocks the
    next one); waiters say whom they wait for;
  - it compiles copies of the sources in a private `build-<pid>-*` folder: torch's build
    file holds absolute source paths, so two checkouts with the same sources share the
    library instead of rebuilding each other's; an interrupted build leaves only that
    folder, which the next builder removes;
  - a compile or link error (the compiler's `error:` in ninja's output, ninja's exit status
    1, no sign of a signal, a killed compiler, missing memory or disk) leaves a marker
    (`failure_marker`: per build folder and compiler) so that later processes fall back at
    once instead of failing again. A build that did not finish (Ctrl-C, SIGTERM, a killed
    compiler, a timeout) is not remembered: it raises `KernelsNotReady` in this process
    instead of falling back (its results would differ from a clean build's), and the next
    process builds again. (A library that builds but does not load falls back, unremembered.)
    Markers of older frn-det versions, which remembered interruptions too, are removed unread.

`prepare()` builds or loads the library in a process that starts training processes,
before it starts them; they inherit the outcome through `FRN_DET_CPP_PREPARED` and never
compile: they load that library or take the same reason for not using it.

The library defines, in `torch.ops.frn_det`:
  - csrc/frn_cpu.cpp: `frn` (differentiable, its autograd in C++) and the two kernels it
    runs, `frn_forward` and `frn_backward`; `tlu` (TLU on its own, differentiable) with
    `tlu_backward` (used by frn/cpp.py and activations/tlu.py);
  - csrc/evonorm_cpu.cpp: `evonorm_s0_forward/backward` and `evonorm_b0_forward/backward`
    (used by norms/evonorm.py).
csrc/common.h holds the helpers the sources share.

`ops()` returns `torch.ops.frn_det`, or None when the kernels are disabled
(`FRN_DET_NO_CPP=1`) or cannot be built (no C++ compiler, no ninja, a compile error): one
warning gives the reason and callers fall back to the PyTorch implementation. The outcome
(and the FRN_DET_NO_CPP setting) is decided at the first call and cached per process.
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ..utils.atomic import write_text_atomic
from ..utils.paths import cache_dir

__all__ = ["ops", "op", "unavailable_reason", "takes", "DTYPES", "build_directory", "library_path", "failure_marker",
           "why_not", "prepare", "KernelsNotReady", "PREPARED_ENV", "SOURCES"]

logger = logging.getLogger(__name__)

_CSRC = Path(__file__).resolve().parent / "csrc"
# compiled into one library; the header is hashed too (it is part of the build)
SOURCES = (_CSRC / "frn_cpu.cpp", _CSRC / "evonorm_cpu.cpp")
_HEADERS = (_CSRC / "common.h",)
# -ffp-contract=off: the forward and the backward round y = a x + b alike (same TLU mask).
# -fno-trapping-math: lets GCC vectorise floor/min/max (EvoNorm's sigmoid); it changes no
# result (the kernels never test floating-point exception flags).
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"]
_NAME = "frn_det_cpu"
_LIBRARY = f"{_NAME}.built.so"  # the finished library, placed by an atomic rename
_LOCK = "build.flock"
_WORK_PREFIX = "build-"  # a builder's private folder: build-<pid>-<random>
_MARKER_PREFIX = "compile_error-"
_LEGACY_MARKERS = "build_failed-*.txt"  # frn-det < 0.x remembered interrupted builds too
PREPARED_ENV = "FRN_DET_CPP_PREPARED"  # {"build": build folder, "reason": why unavailable or null}

_lock = threading.Lock()
_NOT_YET = object()
_ops = _NOT_YET  # torch.ops.frn_det or None once decided
_reason: Optional[str] = None
_fakes_registered = False
# the ops' default overloads by name, looked up once (a little faster to call)
_op_cache = {}
# says that this process compiles, or waits for another one that does (prepare() sets it)
_announce: Callable[[str], None] = logger.warning


class KernelsNotReady(RuntimeError):
    """The kernels are neither usable nor known to be unavailable: their build was
    interrupted (a signal, a killed compiler, a timeout), or a process whose parent prepared
    them cannot find them. Raised, not a fallback: this process's results would differ from
    a clean build's. Nothing is remembered; the next process builds again."""


class _EarlierFailure(RuntimeError):
    """A compile or link error of an earlier process (its marker file says which)."""


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def build_directory() -> Path:
    cache = cache_dir()
    key = hashlib.sha256()
    parts = [p.read_bytes() for p in SOURCES + _HEADERS]
    for part in parts + [" ".join(_CFLAGS).encode(), torch.__version__.encode(), sys.version.encode(),
                         _cpu_id().encode()]:
        key.update(part)
    return Path(cache) / "torch_extensions" / f"{_NAME}-{key.hexdigest()[:16]}"


def library_path(build_dir: Optional[Path] = None) -> Path:
    """The finished library of `build_dir` (default: this environment's build folder)."""
    return Path(build_dir or build_directory()) / _LIBRARY


def _ninja_on_path() -> None:
    """torch runs `ninja` from PATH. The pip package `ninja` (a dependency of frn-det)
    puts it next to the interpreter, which is not on PATH in a venv that was not
    activated: add that folder (this process and its children only)."""
    if shutil.which("ninja"):
        return
    try:
        import ninja

        folder = ninja.BIN_DIR
    except (ImportError, AttributeError):
        folder = os.path.dirname(sys.executable)
    if os.path.isfile(os.path.join(folder, "ninja")) or os.path.isfile(os.path.join(folder, "ninja.exe")):
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


def failure_marker(build_dir: Path, compiler_path: str) -> Path:
    """The file that records a compile or link error in `build_dir` (which already keys the
    torch and Python versions, the sources and flags) for one compiler, named by its path and
    `--version`: a new process does not spend 10-35 s failing again."""
    try:
        version = subprocess.run([compiler_path, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    key = hashlib.sha256((os.path.realpath(compiler_path) + "\n" + version).encode()).hexdigest()[:12]
    return build_dir / f"{_MARKER_PREFIX}{key}.txt"


# In ninja's output: a diagnostic of the compiler or linker ...
_COMPILE_ERROR = re.compile(r"\berror:|undefined reference|\bld returned \d+ exit status")
# ... and what says that a compiler did not finish on its own (a signal, a killed or
# crashed compiler, no memory or disk): the next build may well succeed. Case matters: GCC
# ends every fatal error with "compilation terminated."
_INTERRUPTED = re.compile(r"interrupted by user|signal terminated program|terminated signal|"
                          r"\bKilled\b|\bTerminated\b|due to signal|unable to execute command|"
                          r"internal compiler error|No space left|Cannot allocate memory|out of memory|"
                          r"Resource temporarily unavailable")
_NINJA_FAILED = 1  # ninja's exit status when a command failed (2: interrupted; < 0: killed by a signal)


def is_compile_error(error: BaseException) -> bool:
    """Whether a failed `cpp_extension.load` is a compile or link error that the next build
    would repeat: ninja failed (exit status 1) with the compiler's or linker's error in its
    output, and nothing in it says that the build was interrupted."""
    text = str(error)
    prefix = "Error building extension"
    if not isinstance(error, RuntimeError) or not text.startswith(prefix):
        return False  # not ninja's failure: e.g. a KeyboardInterrupt, or an error loading the library
    status = getattr(error.__cause__, "returncode", _NINJA_FAILED)
    output = text[len(prefix):]
    return status == _NINJA_FAILED and bool(_COMPILE_ERROR.search(output)) and not _INTERRUPTED.search(output)


def _forget_legacy_markers(build_dir: Path) -> None:
    for legacy in build_dir.glob(_LEGACY_MARKERS):
        with contextlib.suppress(OSError):
            legacy.unlink()
            logger.info("removed %s: an older frn-det remembered interrupted builds as failures", legacy)


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """One builder per build folder. An flock: the kernel releases it when its holder ends,
    even by SIGKILL, so a dead process never blocks a build."""
    fd = os.open(build_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            _announce(f"waiting for process {holder}, which is building the C++ kernels in {build_dir}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _compile(cpp_extension, build_dir: Path, compiler_path: str) -> None:
    """Compile the library into `build_dir` (this process holds the build lock)."""
    for stale in build_dir.glob(_WORK_PREFIX + "*"):  # left by builders that were killed
        shutil.rmtree(stale, ignore_errors=True)
    _announce(f"building the C++ CPU kernels of FRN, TLU and EvoNorm in {build_dir} (once per machine and "
              "version; about 30 s)")
    work = Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{os.getpid()}-", dir=build_dir))
    try:
        src = work / "src"
        src.mkdir()
        for path in SOURCES + _HEADERS:  # copies: the build file names them, not this checkout's paths
            shutil.copyfile(path, src / path.name)
        try:
            # is_python_module=False: the library registers torch.ops.frn_det (TORCH_LIBRARY)
            cpp_extension.load(
                name=_NAME,
                sources=[str(src / p.name) for p in SOURCES],
                extra_include_paths=[str(src)],
                extra_cflags=_CFLAGS,
                build_directory=str(work),
                is_python_module=False,
                verbose=False,
            )
        except Exception as e:
            if is_compile_error(e):  # the same next time: remember it
                write_text_atomic(failure_marker(build_dir, compiler_path), _describe(e) + "\n")
            elif str(e).startswith("Error building extension"):  # ninja did not finish: interrupted
                raise KernelsNotReady(f"the C++ kernel build did not finish ({_describe(e)}); not remembered: the "
                                      "next run builds again (FRN_DET_NO_CPP=1 uses the PyTorch implementation "
                                      "instead)") from e
            raise  # a compile error, or a library that does not load (not remembered): the fallback
        built = max(work.glob("*.so"), key=lambda p: p.stat().st_mtime)
        os.replace(built, build_dir / _LIBRARY)  # complete, in one step (this process has loaded it already)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepared_outcome() -> Optional[dict]:
    """What a parent process's prepare() found for this build folder, or None."""
    try:
        prepared = json.loads(os.environ.get(PREPARED_ENV) or "null")
    except ValueError:
        return None
    if isinstance(prepared, dict) and prepared.get("build") == str(build_directory()):
        return prepared
    return None  # not prepared, or for another machine or version (a cluster job's environment)


def _build():
    build_dir = build_directory()
    library = build_dir / _LIBRARY
    if library.is_file():
        _load_library(library)
        return torch.ops.frn_det
    if _prepared_outcome() is not None:
        raise KernelsNotReady(f"the C++ kernels were built before this process started, but {library} is gone; "
                              "this process does not compile (it may be timed): run again to build them")
    # importing it logs "No CUDA runtime is found, using CUDA_HOME=..." on CPU-only
    # machines: irrelevant for this CPU extension
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_logger.setLevel(level)

    compiler = (shlex.split(os.environ.get("CXX", "")) or ["c++"])[0]  # CXX may be "ccache g++"
    compiler_path = shutil.which(compiler)
    if compiler_path is None:
        raise RuntimeError(f"no C++ compiler: {compiler!r} (from $CXX, default c++) not found")
    _ninja_on_path()
    cpp_extension.verify_ninja_availability()  # RuntimeError "Ninja is required ..."
    build_dir.mkdir(parents=True, exist_ok=True)
    _forget_legacy_markers(build_dir)
    marker = failure_marker(build_dir, compiler_path)
    with _build_lock(build_dir):
        if marker.is_file():
            raise _EarlierFailure(f"{marker.read_text().strip()} (a compile error of an earlier build with this "
                                  f"torch, source and compiler; not retried: delete {marker} to retry)")
        if library.is_file():  # built by the process this one waited for
            _load_library(library)
        else:
            _compile(cpp_extension, build_dir, compiler_path)
    _register_fake_kernels()
    return torch.ops.frn_det


def _load_library(library: Path) -> None:
    try:
        torch.ops.frn_det.frn  # noqa: B018  already loaded in this process (a second copy would not register)
    except (AttributeError, RuntimeError):
        torch.ops.load_library(str(library))
    _register_fake_kernels()


def _register_fake_kernels() -> None:
    """Shape-only versions of the ops, for torch.compile (which traces with fake tensors)."""
    global _fakes_registered
    register_fake = getattr(torch.library, "register_fake", None)  # torch >= 2.4
    if register_fake is None or _fakes_registered:
        return

    @register_fake("frn_det::frn")
    def _frn(x, weight, bias, tau, eps, eps_l):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    # statistics and per-channel gradients come in the accumulation dtype (float32 for
    # bf16/fp16 input)
    @register_fake("frn_det::tlu")
    def _tlu(x, tau):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @register_fake("frn_det::tlu_backward")
    def _tlu_backward(dz, z, tau, need_dx):
        dx = torch.empty_like(z) if need_dx else z.new_empty(0)
        return dx, z.new_empty(z.shape[1], dtype=torch.promote_types(z.dtype, torch.float32))

    @register_fake("frn_det::frn_forward")
    def _forward(x, weight, bias, tau, eps, eps_l):
        return torch.empty_like(x), x.new_empty(x.shape[:2], dtype=torch.promote_types(x.dtype, torch.float32))

    @register_fake("frn_det::frn_backward")
    def _backward(dz, x, r, weight, bias, tau, need_dx):
        dx = torch.empty_like(x) if need_dx else x.new_empty(0)
        acc = torch.promote_types(x.dtype, torch.float32)
        return (dx,) + tuple(x.new_empty(x.shape[1], dtype=acc) for _ in range(4))

    def _acc(x):
        return torch.promote_types(x.dtype, torch.float32)

    @register_fake("frn_det::evonorm_s0_forward")
    def _s0_forward(x, weight, bias, v, groups, eps):
        stat = x.new_empty((x.shape[0], groups), dtype=_acc(x))
        return torch.empty_like(x), stat, torch.empty_like(stat)

    @register_fake("frn_det::evonorm_s0_backward")
    def _s0_backward(dz, x, mean, rstd, weight, v, groups, need_dx):
        dx = torch.empty_like(x) if need_dx else x.new_empty(0)
        return (dx,) + tuple(x.new_empty(x.shape[1], dtype=_acc(x)) for _ in range(3))

    @register_fake("frn_det::evonorm_b0_forward")
    def _b0_forward(x, weight, bias, v, running_var, eps):
        n, c = x.shape[:2]
        per_c = tuple(x.new_empty(c, dtype=_acc(x)) for _ in range(3))
        per_nc = tuple(x.new_empty((n, c), dtype=_acc(x)) for _ in range(2))
        return (torch.empty_like(x),) + per_c + per_nc

    @register_fake("frn_det::evonorm_b0_backward")
    def _b0_backward(dz, x, weight, v, left, bmean, imean, istd, batch_stats, need_dx):
        dx = torch.empty_like(x) if need_dx else x.new_empty(0)
        return (dx,) + tuple(x.new_empty(x.shape[1], dtype=_acc(x)) for _ in range(3))

    _fakes_registered = True


def _describe(e: Exception) -> str:
    """A one-line reason: the exception's first line plus the first compiler error, if any."""
    lines = [ln.strip() for ln in str(e).strip().splitlines()] or [""]
    errors = [ln for ln in lines[1:] if _COMPILE_ERROR.search(ln) or "not found" in ln.lower()]
    reason = f"{type(e).__name__}: {lines[0][:300]}"
    return reason + (f" ... {errors[0][:300]}" if errors else "")


def _disabled() -> bool:
    return os.environ.get("FRN_DET_NO_CPP", "0") not in ("", "0")


def _load():
    global _reason
    if _disabled():
        _reason = "C++ kernels disabled by FRN_DET_NO_CPP"
        return None
    prepared = _prepared_outcome()
    if prepared is not None and prepared.get("reason"):
        _reason = prepared["reason"]  # the parent's outcome (it said so on the console), without trying again
        logger.info("FRN C++ CPU kernels unavailable, using the PyTorch implementation (%s)", _reason)
        return None
    try:
        lib = _build()
    except KernelsNotReady:
        raise
    except _EarlierFailure as e:
        _reason = f"C++ build failed earlier: {e}"
    except Exception as e:  # noqa: BLE001  no compiler or ninja, a compile error, a library that does not load
        _reason = f"C++ build failed: {_describe(e)}"
    else:
        _op_cache.clear()
        _reason = None
        return lib
    logger.warning("FRN C++ CPU kernels unavailable, using the PyTorch implementation (%s)", _reason)
    return None


def ops():
    """torch.ops.frn_det, or None when disabled (FRN_DET_NO_CPP=1 at the first call) or not
    buildable (see unavailable_reason()). Decided once per process; raises KernelsNotReady
    (and decides nothing) when the build was interrupted."""
    global _ops
    if _ops is _NOT_YET:
        with _lock:
            if _ops is _NOT_YET:
                _ops = _load()
    return _ops


def prepare(announce: Callable[[str], None] = logger.warning) -> Optional[str]:
    """Build or load the kernels now, in a process about to start training processes, and
    have those take the same outcome without compiling (they inherit PREPARED_ENV). Returns
    None when the kernels are available, else why not; `announce` gets a line when this
    process builds (or waits for another process's build), and one when the kernels are
    unavailable. Raises KernelsNotReady when the build was interrupted."""
    global _announce
    inherited = _prepared_outcome()  # from a parent that prepared (the sweep process for its jobs)
    if inherited is None or inherited.get("reason") is None:
        os.environ.pop(PREPARED_ENV, None)  # load, or build here if the library has gone
    previous, _announce = _announce, announce
    started = time.perf_counter()
    try:
        ops()
    finally:
        _announce = previous
    build_dir = build_directory()
    os.environ[PREPARED_ENV] = json.dumps({"build": str(build_dir), "reason": _reason})
    if _reason is not None and inherited is None:  # (a parent said it already)
        announce(f"FRN, TLU and EvoNorm use their PyTorch implementation in every run: {_reason}")
    elif time.perf_counter() - started > 1.0:
        announce(f"C++ CPU kernels ready ({time.perf_counter() - started:.0f} s, {library_path(build_dir)})")
    return _reason


def op(name: str):
    """The default overload of torch.ops.frn_det.<name> (ops() must not be None)."""
    f = _op_cache.get(name)
    if f is None:
        f = _op_cache[name] = getattr(ops(), name).default
    return f


def unavailable_reason() -> Optional[str]:
    """Why ops() returns None; None if it does not."""
    ops()
    return _reason


DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def takes(x: torch.Tensor) -> bool:
    """Whether "auto" sends x to the C++ ops (FRN, TLU, EvoNorm): 4-d CPU tensors of DTYPES that
    are not channels_last (those keep the PyTorch paths, which keep their layout; the
    kernels would need NCHW copies of x and dz), when the kernels are available."""
    return (
        x.is_cpu
        and x.dim() == 4
        and x.dtype in DTYPES
        and (x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last))
        and ops() is not None
    )


def why_not(x: torch.Tensor) -> Optional[str]:
    """Why takes(x) is False, for the record of the implementation that ran
    (layers/implementations.py); None for non-CPU tensors (these layers have no kernels there)."""
    if not x.is_cpu:
        return None
    if x.dim() != 4 or x.dtype not in DTYPES:
        return f"{x.dim()}-d {str(x.dtype).replace('torch.', '')} input (the C++ kernels take 4-d float tensors)"
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last input"
    return unavailable_reason()
