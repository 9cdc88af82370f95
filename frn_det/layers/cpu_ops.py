"""frn-det's C++ CPU library (csrc/: FRN(+TLU), TLU, EvoNorm-B0/S0), compiled on first use.

The extension is built with `torch.utils.cpp_extension.load` into
`$FRN_DET_CACHE/torch_extensions/` (default `~/.cache/frn_det/torch_extensions/`), in a
folder whose name hashes the source, the flags, the Python and torch versions and the
CPU, so that one cache can serve several environments and machines. Later processes
load the built library (ninja finds nothing to do). Processes that start at the same
time (DDP workers) wait for each other on torch's file lock in that folder.

The library defines, in `torch.ops.frn_det`:
  - csrc/frn_cpu.cpp: `frn` (differentiable, its autograd in C++) and the two kernels it
    runs, `frn_forward` and `frn_backward`; `tlu` (TLU on its own, differentiable) with
    `tlu_backward` (used by frn/cpp.py and activations/tlu.py);
  - csrc/evonorm_cpu.cpp: `evonorm_s0_forward/backward` and `evonorm_b0_forward/backward`
    (used by norms/evonorm.py).
csrc/common.h holds the helpers the sources share.

`ops()` returns `torch.ops.frn_det`, or None when the kernels are disabled
(`FRN_DET_NO_CPP=1`) or cannot be built (no C++ compiler, no ninja, ...): one warning
gives the reason and callers fall back to the PyTorch implementation. A failed compile or
load leaves a marker file in the build folder (`failure_marker`: per torch version, source
and compiler), so that later processes fail at once instead of building again. The outcome (and
the FRN_DET_NO_CPP setting) is decided at the first call and cached per process.
"""
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import torch

from ..utils.atomic import write_text_atomic
from ..utils.paths import cache_dir

__all__ = ["ops", "op", "unavailable_reason", "takes", "DTYPES", "build_directory", "failure_marker", "SOURCES"]

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

_lock = threading.Lock()
_NOT_YET = object()
_ops = _NOT_YET  # torch.ops.frn_det or None once decided
_reason: Optional[str] = None
_fakes_registered = False
# the ops' default overloads by name, looked up once (a little faster to call)
_op_cache = {}


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


class _EarlierFailure(RuntimeError):
    """A build that failed in an earlier process (its marker file says why)."""


def failure_marker(build_dir: Path, compiler_path: str) -> Path:
    """The file that records a failed build in `build_dir` (which already keys the torch and
    Python versions, the sources and flags) for one compiler, named by its path and
    `--version`: a new process does not spend 10-35 s failing again."""
    try:
        version = subprocess.run([compiler_path, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    key = hashlib.sha256((os.path.realpath(compiler_path) + "\n" + version).encode()).hexdigest()[:12]
    return build_dir / f"build_failed-{key}.txt"


def _build():
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
    build_dir = build_directory()
    build_dir.mkdir(parents=True, exist_ok=True)
    marker = failure_marker(build_dir, compiler_path)
    if marker.is_file():
        raise _EarlierFailure(f"{marker.read_text().strip()} (an earlier build with this torch, source and"
                              f" compiler; not retried: delete {marker} to retry)")
    try:
        # is_python_module=False: the library registers torch.ops.frn_det (TORCH_LIBRARY)
        cpp_extension.load(
            name=_NAME,
            sources=[str(p) for p in SOURCES],
            extra_include_paths=[str(_CSRC)],
            extra_cflags=_CFLAGS,
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    except Exception as e:  # a compile, link or load error: the same next time
        write_text_atomic(marker, _describe(e) + "\n")
        raise
    _register_fake_kernels()
    return torch.ops.frn_det


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
    errors = [ln for ln in lines[1:] if "error" in ln.lower() or "not found" in ln.lower()]
    reason = f"{type(e).__name__}: {lines[0][:300]}"
    return reason + (f" ... {errors[0][:300]}" if errors else "")


def _disabled() -> bool:
    return os.environ.get("FRN_DET_NO_CPP", "0") not in ("", "0")


def _load():
    global _reason
    if _disabled():
        _reason = "disabled by FRN_DET_NO_CPP"
        return None
    try:
        lib = _build()
    except Exception as e:  # compiler/ninja missing, compile or load error
        _reason = str(e) if isinstance(e, _EarlierFailure) else _describe(e)
        logger.warning("FRN C++ CPU kernels unavailable, using the PyTorch implementation (%s)", _reason)
        return None
    _op_cache.clear()
    _reason = None
    return lib


def ops():
    """torch.ops.frn_det, or None when disabled (FRN_DET_NO_CPP=1 at the first call) or not
    buildable (see unavailable_reason()). Decided once per process."""
    global _ops
    if _ops is _NOT_YET:
        with _lock:
            if _ops is _NOT_YET:
                _ops = _load()
    return _ops


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

