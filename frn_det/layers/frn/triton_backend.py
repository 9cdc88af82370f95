"""Triton kernels for FRN(+TLU) on CUDA (triton_kernels.py), with their autograd function.

Inputs: 4-d float32/bfloat16/float16 CUDA tensors (float64 is not supported: frn_fused
keeps it on the PyTorch path). The kernels work on NCHW-contiguous tensors; other layouts
(channels_last included) are copied with `.contiguous()` first, and the output and dx are
NCHW-contiguous. Statistics and sums are float32; z and dx are rounded to x's dtype once.
The parameters may have any float dtype (they are read and converted in the kernels).

One pass over memory each way (see triton_kernels.py): the forward reads x once and writes
z; the backward reads dz and x once and writes dx; the parameter gradients are summed in
the kernels in a fixed order (deterministic). Saved for the backward: x (the contiguous
copy, if one was made), r = 1/sqrt(nu2 + e) per (n, c) in float32, and the parameter
tensors themselves. Double backward is not supported (once_differentiable), as with the
other fused backends.

Which layout a shape takes (`plan()`, cached per shape bucket; no run-time autotuning):

* planes of M <= TILE_MAX elements: "tile", whole planes in registers, ROWS planes per
  program (small planes are packed so that a program holds about TILE elements, but with
  at least one program per SM where there are that many planes). One launch each way.
* larger planes: "split" into CHUNK-element chunks over a persistent grid. One launch each
  way ("one-pass") where every chunk of a plane fits on the GPU at once (S chunks <= the
  programs the GPU holds, from the compiled kernel's registers and the SM count, times
  ONE_PASS_SM_SHARE: SMs left for other streams' kernels, e.g. NCCL's in DDP, which
  could otherwise hold SMs our spinning programs wait for); else, and under Triton's
  interpreter (which runs programs one after another), "two-pass": a partials launch and
  a finishing launch that reads x again. The backward adds one small launch that sums the
  parameter gradients. FRN_DET_TRITON_ONE_PASS=0 forces "two-pass".

A lean launch path: after the first call of a kernel with a given specialization (constexpr
flags and sizes, the argument dtypes, 16-byte alignment and the integer properties Triton
specializes on), the compiled kernel is called directly (`CompiledKernel.run`, as
`JITFunction.run` does after its own argument binding and cache lookup) with the current
stream: about a third of `kernel[grid](...)`'s host time as measured elsewhere; measure it
on the GPU with tools/benchmark_frn.py --host-cost. FRN_DET_TRITON_DIRECT=0 turns it off;
it is off under the interpreter (nothing is compiled there). The only allocations per call
are the outputs (z and r; dx and the parameter gradients) and, for split planes, the
partial-sum buffer (and the counters of the one-pass launch).

triton is imported at the first use, not with this module, and need not be installed:
`available()` / `unavailable_reason()` say whether the kernels can be used
(FRN_DET_NO_TRITON=1 disables them). Under Triton's interpreter (TRITON_INTERPRET=1,
read through `triton.knobs` at each call) the kernels also accept CPU tensors; that is
how the tests run them on machines without a GPU (slow: tiny tensors only).
"""
import contextlib
import functools
import os
from typing import NamedTuple, Optional

import torch

from ..autograd_utils import needs_graph, once_differentiable_backward

__all__ = ["available", "unavailable_reason", "interpreting", "check_input", "FRNTritonFunction", "frn_triton",
           "DTYPES", "plan", "launch_stats"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Sizes, in elements of x per program (to be tuned on the GPU: tools/benchmark_frn.py).
TILE_MAX = 8192  # the largest plane one program holds whole (one pass, no cross-program sums)
TILE = 8192  # small planes are packed ROWS per program up to about this many elements
CHUNK = 4096  # a split plane's chunk per work item
ELEMENTS_PER_THREAD = 16  # per tensor held in registers: sets num_warps (1 to 16)
ONE_PASS_SM_SHARE = 0.75  # of the SMs, at most, that a one-pass split launch may fill
INTERPRETER_PROGRAMS = 3  # the persistent grid under the interpreter (programs run in turn)
FINALIZE_BLOCK_C = 64  # channels per program of the backward's parameter-gradient sums

_NOT_YET = object()
_triton = _NOT_YET  # the triton module, or None once an import failed
_import_error: Optional[str] = None


def _flag(name: str) -> bool:
    return os.environ.get(name, "1") not in ("", "0")


DIRECT_LAUNCH = _flag("FRN_DET_TRITON_DIRECT")
ONE_PASS = _flag("FRN_DET_TRITON_ONE_PASS")


def _import_triton():
    global _triton, _import_error
    if _triton is _NOT_YET:
        try:
            import triton
        except Exception as e:  # noqa: BLE001  not installed, or a broken install (missing libraries, ...)
            lines = str(e).strip().splitlines() or [""]
            _import_error = f"{type(e).__name__}: {lines[0][:300]}"
            triton = None
        _triton = triton
    return _triton


def unavailable_reason() -> Optional[str]:
    """Why the Triton kernels cannot be used in this process; None if they can (which
    does not mean that a CUDA device exists)."""
    if os.environ.get("FRN_DET_NO_TRITON", "0") not in ("", "0"):
        return "disabled by FRN_DET_NO_TRITON"
    if _import_triton() is None:
        return f"triton not importable ({_import_error})"
    return None


def available() -> bool:
    return unavailable_reason() is None


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter now (TRITON_INTERPRET=1)."""
    if _import_triton() is None:
        return False
    from .triton_kernels import interpreting as triton_interpreting

    return triton_interpreting()


def check_input(x: torch.Tensor) -> None:
    """Raises if the kernels cannot run on x: RuntimeError if they are unavailable,
    ValueError for the tensor's device, dtype or shape."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"FRN Triton kernels unavailable: {reason}")
    if not x.is_cuda and not interpreting():
        raise ValueError(f"FRN Triton kernels need a CUDA tensor, got device {x.device} "
                         "(CPU tensors only under Triton's interpreter, TRITON_INTERPRET=1)")
    if x.dtype not in DTYPES:
        raise ValueError(f"FRN Triton kernels support {[str(d).replace('torch.', '') for d in DTYPES]}, "
                         f"got {str(x.dtype).replace('torch.', '')}")
    if x.dim() != 4 or x.numel() == 0:
        raise ValueError(f"FRN Triton kernels expect a non-empty NCHW tensor, got shape {list(x.shape)}")


# ---------------------------------------------------------------------------------------
# Configurations per shape bucket


def pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def warps_for(elements: int) -> int:
    return max(1, min(16, elements // (32 * ELEMENTS_PER_THREAD)))


class Plan(NamedTuple):
    """How one shape runs: "tile" (rows planes of block elements per program) or "split"
    (chunk elements per work item, s chunks per plane, s_block partials summed at a time)."""
    layout: str
    rows: int
    block: int
    chunk: int
    s: int
    s_block: int
    num_warps: int


@functools.lru_cache(maxsize=512)
def _plan(m: int, rows_needed: int, min_programs: int, tile_max: int, tile: int, chunk: int) -> Plan:
    if m <= tile_max:
        block = pow2(m)
        rows = max(1, min(tile // block, pow2(rows_needed)))
        while rows > 1 and -(-rows_needed // rows) < min_programs:  # keep the SMs busy
            rows //= 2
        return Plan("tile", rows, block, 0, 1, 1, warps_for(rows * block))
    block = min(pow2(m), chunk)
    s = -(-m // block)
    return Plan("split", 1, 0, block, s, min(pow2(s), 1024), warps_for(block))


def plan(m: int, planes: int, min_programs: int = 1) -> Plan:
    """The configuration of an H*W = m plane; planes: how many planes share a launch (N*C
    forward, C backward, the rows a tile program may pack); min_programs: the number of
    programs to keep at least, where there are that many planes (the SM count)."""
    return _plan(int(m), int(planes), int(min_programs), TILE_MAX, TILE, CHUNK)


@functools.lru_cache(maxsize=16)
def sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _min_programs(x: torch.Tensor) -> int:
    return sm_count(x.device.index or 0) if x.is_cuda else 1


# ---------------------------------------------------------------------------------------
# Launching


class _Stats:
    """Launch counters (tests and benchmarks): direct calls of cached compiled kernels, calls
    through `kernel[grid]`, and launches per layout."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.direct = self.jit = 0
        self.layouts = {}

    def count(self, layout: str):
        self.layouts[layout] = self.layouts.get(layout, 0) + 1


launch_stats = _Stats()
_compiled = {}  # specialization key -> CompiledKernel
_direct_problem: Optional[str] = None  # why direct launches are off in this triton, once checked


def _direct_supported() -> bool:
    """Whether this triton's JITFunction.run launches as `kernel.run(grid0, grid1, grid2,
    stream, kernel.function, kernel.packed_metadata, launch_metadata, enter_hook, exit_hook,
    *all_args)` (triton 3.3 to 3.8 do), which the direct path repeats."""
    global _direct_problem
    if _direct_problem is None:
        import inspect

        from triton.runtime.jit import JITFunction

        try:
            src = inspect.getsource(JITFunction.run)
        except (OSError, TypeError) as e:
            src = f"<{e}>"
        ok = "kernel.packed_metadata" in src and "*bound_args.values()" in src
        _direct_problem = "" if ok else "JITFunction.run launches differently in this triton version"
    return not _direct_problem


def _spec(v):
    """What Triton specializes an argument on (dtype, 16-byte alignment, integer range and
    divisibility by 16, equality to 1), so that a cached compiled kernel is only reused for
    arguments it was compiled for."""
    if isinstance(v, torch.Tensor):
        return v.dtype, v.data_ptr() % 16 == 0
    if isinstance(v, bool):
        return "b", v
    if isinstance(v, int):
        return "i", v == 1, v % 16 == 0, -(2**31) <= v < 2**31
    return type(v).__name__


def launch(kernel, grid, args: tuple, constexprs: tuple, num_warps: int, device: torch.device):
    """kernel[grid](*args, *constexprs, num_warps=...), or the cached compiled kernel
    called directly. constexprs: (name, value) pairs, the kernel's last parameters."""
    triton = _triton
    hooks = triton.knobs.runtime if hasattr(triton, "knobs") else None
    direct = DIRECT_LAUNCH and device.type == "cuda" and hooks is not None and hooks.launch_enter_hook is None
    if direct:
        key = (id(kernel), device.index, constexprs, num_warps, tuple(_spec(a) for a in args))
        compiled = _compiled.get(key)
        if compiled is not None:
            from triton.runtime.driver import driver

            stream = driver.active.get_current_stream(device.index)
            compiled.run(grid[0], grid[1] if len(grid) > 1 else 1, 1, stream, compiled.function,
                         compiled.packed_metadata, None, None, hooks.launch_exit_hook,
                         *args, *(v for _, v in constexprs))
            launch_stats.direct += 1
            return
    compiled = kernel[grid](*args, **dict(constexprs), num_warps=num_warps)
    launch_stats.jit += 1
    # the direct call passes the constexprs positionally, after args: they must be the
    # kernel's last parameters, in this order
    if (direct and _direct_supported() and hasattr(compiled, "packed_metadata")
            and list(getattr(kernel, "arg_names", ()))[len(args):] == [n for n, _ in constexprs]):
        _compiled[key] = compiled


def _compile_only(kernel, args: tuple, constexprs: tuple, num_warps: int):
    """The compiled kernel for these arguments, without launching it (for its registers)."""
    return kernel.warmup(*args, **dict(constexprs), num_warps=num_warps, grid=(1,))


@functools.lru_cache(maxsize=64)
def _resident_programs(index: int, num_warps: int, n_regs: int, shared: int) -> int:
    """How many programs of a kernel the GPU holds at once (occupancy x SMs), times
    ONE_PASS_SM_SHARE of the SMs; at least one per SM of that share."""
    props = torch.cuda.get_device_properties(index)
    threads = num_warps * 32
    per_sm = min(32, props.max_threads_per_multi_processor // threads)  # 32 blocks per SM at most
    regs_per_sm = getattr(props, "regs_per_multiprocessor", 65536)
    if n_regs:
        per_sm = min(per_sm, regs_per_sm // (((n_regs * 32 + 255) // 256) * 256 * num_warps))
    smem = getattr(props, "shared_memory_per_multiprocessor", 0)
    if shared and smem:
        per_sm = min(per_sm, smem // shared)
    return max(1, per_sm) * max(1, int(props.multi_processor_count * ONE_PASS_SM_SHARE))


def split_grid(kernel, args, constexprs, num_warps: int, items: int, set_items: int, device) -> tuple:
    """(programs, one launch?) of a split launch with these arguments: one launch where the
    set_items work items whose partials are combined (a plane's chunks; EvoNorm's groups and
    channels) can all be resident together."""
    if device.type != "cuda":  # the interpreter runs programs one after another
        return min(items, INTERPRETER_PROGRAMS), set_items == 1
    sms = sm_count(device.index or 0)
    if not ONE_PASS:
        return min(items, 8 * sms), set_items == 1
    compiled = _compile_only(kernel, args, constexprs, num_warps)
    try:
        compiled._init_handles()
        n_regs, shared = int(compiled.n_regs), int(compiled.metadata.shared)
    except Exception:  # noqa: BLE001  unknown: one program per SM is resident whatever it uses
        n_regs, shared = 0, 0
    if n_regs:
        resident = _resident_programs(device.index or 0, num_warps, n_regs, shared)
    else:
        resident = max(1, int(sms * ONE_PASS_SM_SHARE))
    if set_items <= resident:
        return min(items, resident), True
    return min(items, 8 * sms), False


def _kernels():
    from .triton_kernels import kernels

    return kernels()


def on_device(x: torch.Tensor):
    # Triton launches on the current CUDA device: make it x's
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------
# Forward and backward


def _forward(x, weight, bias, tau, eps: float, eps_l):
    """z and r = rsqrt(nu2 + e) per (n, c) (float32) for an NCHW-contiguous x."""
    n, c, h, w = x.shape
    m, planes = h * w, n * c
    z = torch.empty_like(x)
    r = torch.empty((n, c), device=x.device, dtype=torch.float32)
    k = _kernels()
    p = plan(m, planes, _min_programs(x))
    tau_arg = tau if tau is not None else weight  # unused placeholders (HAS_TAU, HAS_EPS_L False)
    eps_l_arg = eps_l if eps_l is not None else weight
    flags = (("HAS_TAU", tau is not None), ("HAS_EPS_L", eps_l is not None))
    with on_device(x):
        if p.layout == "tile":
            launch_stats.count("tile")
            launch(k.fwd_tile, (-(-planes // p.rows),), (x, z, r, weight, bias, tau_arg, eps_l_arg, eps, planes, c, m),
                    flags + (("ROWS", p.rows), ("BLOCK", p.block)), p.num_warps, x.device)
            return z, r
        items = planes * p.s
        partials = torch.empty(items, device=x.device, dtype=torch.float32)
        counters = torch.zeros(planes, device=x.device, dtype=torch.int32)
        args = (x, z, r, weight, bias, tau_arg, eps_l_arg, partials, counters, eps, c, m, p.s, items)
        sizes = (("CHUNK", p.chunk), ("S_BLOCK", p.s_block))
        programs, one_launch = split_grid(k.fwd_split, args, flags + (("PHASE", 0),) + sizes, p.num_warps, items,
                                           p.s, x.device)
        phases = (0,) if one_launch else (1, 2)
        launch_stats.count("split one-pass" if one_launch else "split two-pass")
        for phase in phases:
            launch(k.fwd_split, (programs,), args, flags + (("PHASE", phase),) + sizes, p.num_warps, x.device)
    return z, r


def _contiguous(p: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return p if p is None or p.is_contiguous() else p.contiguous()


def _backward(ctx, dz):
    x, r, weight, bias, tau, eps_l = ctx.saved_tensors
    need_x, need_w, need_b, need_tau, need_eps_l, _ = ctx.needs_input_grad
    n, c, h, w = x.shape
    m = h * w
    dz = dz.contiguous()  # e.g. the expanded ones of out.sum().backward()
    weight_, bias_ = _contiguous(weight), _contiguous(bias)
    tau_ = _contiguous(tau) if tau is not None else weight_  # placeholder, unused without TLU
    eps_l_ = _contiguous(eps_l) if eps_l is not None else weight_
    dx = torch.empty_like(x) if need_x else x  # placeholder, not written without NEED_DX
    # fresh (C,) float32 tensors: no aliasing between the gradients; autograd casts each to
    # its input's dtype
    dw, db = torch.empty(c, device=x.device, dtype=torch.float32), torch.empty(c, device=x.device, dtype=torch.float32)
    dtau = torch.empty(c, device=x.device, dtype=torch.float32) if tau is not None else dw
    deps = torch.empty(c, device=x.device, dtype=torch.float32) if eps_l is not None else dw
    k = _kernels()
    flags = (("HAS_TAU", tau is not None),)
    with on_device(x):
        p = plan(m, c, _min_programs(x))
        if p.layout == "tile":
            launch_stats.count("tile")
            launch(k.bwd_tile, (-(-c // p.rows),),
                    (dz, x, r, weight_, bias_, tau_, eps_l_, dx, dw, db, dtau, deps, n, c, m),
                    flags + (("HAS_EPS_L", eps_l is not None), ("NEED_DX", need_x), ("ROWS", p.rows),
                             ("BLOCK", p.block)), p.num_warps, x.device)
        else:
            planes = n * c
            p = plan(m, planes, _min_programs(x))
            items = planes * p.s
            partials = torch.empty(items * 3, device=x.device, dtype=torch.float32)
            counters = torch.zeros(planes, device=x.device, dtype=torch.int32) if need_x else partials
            args = (dz, x, r, weight_, bias_, tau_, dx, partials, counters, c, m, p.s, items)
            sizes = (("CHUNK", p.chunk), ("S_BLOCK", p.s_block))
            flags_dx = flags + (("NEED_DX", need_x),)
            programs, one_launch = split_grid(k.bwd_split, args, flags_dx + (("PHASE", 0),) + sizes, p.num_warps,
                                               items, p.s, x.device)
            if not need_x:  # the partials are all the parameter gradients need
                phases = (1,)
            else:
                phases = (0,) if one_launch else (1, 2)
            launch_stats.count("split one-pass" if phases != (1, 2) else "split two-pass")
            for phase in phases:
                launch(k.bwd_split, (programs,), args, flags_dx + (("PHASE", phase),) + sizes, p.num_warps, x.device)
            launch(k.bwd_finalize, (-(-c // FINALIZE_BLOCK_C),),
                    (partials, r, weight_, eps_l_, dw, db, dtau, deps, n, c, p.s),
                    flags + (("HAS_EPS_L", eps_l is not None), ("BLOCK_C", FINALIZE_BLOCK_C),
                             ("S_BLOCK", min(p.s_block, 64))), 4, x.device)
    return (
        dx if need_x else None,
        dw if need_w else None,
        db if need_b else None,
        dtau if need_tau else None,
        deps if need_eps_l else None,
        None,
    )


class FRNTritonFunction(torch.autograd.Function):
    """z = FRN(+TLU)(x) with the Triton kernels. Saves the (NCHW-contiguous) input and r
    per (n, c), besides the parameters themselves."""

    @staticmethod
    def forward(ctx, x, weight, bias, tau, eps_l, eps: float):
        x = x.contiguous()
        z, r = _forward(x, _contiguous(weight), _contiguous(bias), _contiguous(tau), eps, _contiguous(eps_l))
        ctx.save_for_backward(x, r, weight, bias, tau, eps_l)
        return z

    backward = once_differentiable_backward(_backward)


def frn_triton(x, weight, bias, tau, eps: float, eps_l=None) -> torch.Tensor:
    """FRN(+TLU) with the Triton kernels: x a non-empty 4-d float32/bf16/fp16 CUDA tensor
    (or CPU under the interpreter) of any layout; output NCHW-contiguous, x's dtype."""
    check_input(x)
    if needs_graph(x, weight, bias, tau, eps_l):
        return FRNTritonFunction.apply(x, weight, bias, tau, eps_l, float(eps))
    return _forward(x.contiguous(), _contiguous(weight), _contiguous(bias), _contiguous(tau), float(eps),
                    _contiguous(eps_l))[0]
