#!/usr/bin/env python
"""Forward+backward time and saved-for-backward memory of FRN+TLU and the comparator norms
against BN/GN + ReLU.

Shapes come from RetinaNet R50-FPN:
  head:     P3-P7, 256 channels, strides 8..128 of an --image-size square image (CPU default
            512: P3 64x64 ... P7 4x4).
  backbone: stem (64 ch, stride 2) and res2-res5 outputs (256/512/1024/2048 ch, strides
            4..32) of an 800x1333 image scaled by --backbone-scale (CPU default 0.25).

Per shape every implementation runs `torch.autograd.grad` of its output against the
input and parameters with a fixed upstream gradient. The implementations are timed
round-robin (one call each per round; at least --repeats rounds and --min-seconds), so
that load from other processes hits all of them alike, and the median is reported.
"saved MB" sums the distinct storages that autograd packs during one forward
(saved_tensors_hooks), the input included.

On a CPU shared with other processes, OpenMP threads that lose their core stall whole
ops (the medians then jump in steps of a scheduler time slice); compare with --threads 1.

Rows: "FRN+TLU fused (torch)" is the PyTorch autograd function (frn_fused backend
"torch"), "FRN+TLU fused (C++)" the C++ CPU kernels (backend "cpp", built on first use
and cached; --device cpu only), "FRN+TLU fused (Triton)" the Triton kernels (backend
"triton", compiled on first use; --device cuda only, where triton is importable).
FilterResponseNorm2d(impl="fused" or "auto") takes the C++ kernels for CPU inputs
(float32/float64/bf16/fp16), the Triton kernels for CUDA float32/bf16/fp16 inputs, the
torch function otherwise (channels_last inputs, no compiler, no triton). (Triton compiles at the
first call per dtype and plane-size
specialization: the warm-up calls absorb it.)

Comparator rows (--norms, default all; --norms frn keeps the FRN rows only), each in
training mode with the activation that follows it in the model: "BN+TLU", "GN+TLU",
"FRN+ReLU" (FRN without TLU, then ReLU), "BRN+ReLU" (Batch Renormalization, its r_max /
d_max ramp finished so that r and d are computed and clipped), "GNWS+ReLU" (GN+ReLU plus
the Weight Standardization of one 3x3 conv weight of the layer's width: what GNWS adds per
layer), "EvoNorm-B0" / "EvoNorm-S0" (norm+activation layers; frn-det's C++ kernels on CPU, the
reference on CUDA), "EvoNorm-B0 Triton" / "EvoNorm-S0 Triton" (layers/norms/evonorm_triton.py,
CUDA only, not yet taken by the layers) and their "reference" (op by op) and "timm"
implementations.

Small-batch rows (--norms small-batch: these and BN/GN+ReLU only; also in --norms all):
"EvalNorm+ReLU", "IN+ReLU", "MABN+ReLU" (its moving averages and renormalization in use),
"WN bias+ReLU" (what WN puts in the norm slot). CBN needs the layer before it (its Taylor
compensation differentiates that layer's output) and MABN / WN change that layer, so they
are also timed with a 3x3 conv of the layer's width in front: "conv+BN+ReLU" (the
baseline), "conv+CBN+ReLU" (window 4, full), "convWC+MABN+ReLU" (weight-centralized conv),
"convWN+ReLU" (weight-normalized conv and its bias); their summary is the ratio to
conv+BN+ReLU (the conv's own time varies too much under load to subtract it).

"eff GB/s" = ideal bytes / time, where the ideal fused forward+backward moves 5 tensors
of the input's size (forward reads x and writes z; backward reads x and dz and writes
dx); "copy GB/s" is the bandwidth of `dst.copy_(x)` (2 tensors) measured in the same run;
"x bound" = time / (ideal bytes / copy bandwidth): 1.0 is as fast as the memory allows.

--cuda-graphs (CUDA only) also captures each implementation's forward+backward in a CUDA
graph and times its replay ("graph ms"): eager ms - graph ms is the launch and Python
overhead that graphs remove, which dominates the small maps (P6/P7, small batches). A
row whose capture fails (an op that synchronizes with the host) says so.

--host-cost (CUDA only) measures the host side of one forward+backward call at a P7-sized
map (1x256x8x8): microseconds of CPU time per call while the GPU keeps up (the calls are
queued without synchronizing, then waited for), for the Triton FRN+TLU with its direct
launches of cached compiled kernels and with `kernel[grid]` launches, BN+ReLU and GN+ReLU;
and the host time of one launch of the Triton forward kernel alone, both ways. Under
Triton's CPU interpreter there is nothing compiled to launch: this is a GPU measurement.

Examples:
  python tools/benchmark_frn.py --quick
  python tools/benchmark_frn.py --quick --threads 1 --norms small-batch --shapes all
  python tools/benchmark_frn.py --shapes all --batch 1 2 4 --dtype float32 bfloat16
  python tools/benchmark_frn.py --device cuda --batch 8 16 --json frn_bench.json
  python tools/benchmark_frn.py --device cuda --shapes all --batch 1 2 4 8 16 --norms frn --cuda-graphs
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from frn_det.layers import TLU, BatchRenorm2d, EvoNorm2dB0, EvoNorm2dS0, standardize_weight  # noqa: E402
from frn_det.layers import cpu_ops as frn_cpp  # noqa: E402
from frn_det.layers.frn import FilterResponseNorm2d, frn_fused  # noqa: E402
from frn_det.layers.frn import triton_backend as frn_triton  # noqa: E402
from frn_det.layers.norms import (  # noqa: E402
    CrossIterationBatchNorm2d,
    EvalNorm2d,
    InstanceNorm2d,
    MABN2d,
    WNBias2d,
    centralize_layers,
    link_cbn_layers,
    weight_normalize_layers,
)
from frn_det.layers.norms.evonorm_triton import evonorm_b0_triton, evonorm_s0_triton  # noqa: E402
from frn_det.utils.atomic import write_text_atomic  # noqa: E402
from frn_det.utils.saved_tensors import saved_storages  # noqa: E402

HEAD_LEVELS = [("P3", 8), ("P4", 16), ("P5", 32), ("P6", 64), ("P7", 128)]
BACKBONE_STAGES = [("stem", 64, 2), ("res2", 256, 4), ("res3", 512, 8), ("res4", 1024, 16), ("res5", 2048, 32)]
BASELINES = {"BN+ReLU": "x_bn_relu", "GN+ReLU": "x_gn_relu", "conv+BN+ReLU": "x_conv_bn_relu"}  # impl -> ratio key
IDEAL_TENSOR_PASSES = 5


def head_shapes(image: int) -> List[Tuple[str, int, int, int]]:
    return [(name, 256, math.ceil(image / s), math.ceil(image / s)) for name, s in HEAD_LEVELS]


def backbone_shapes(scale: float) -> List[Tuple[str, int, int, int]]:
    h, w = round(800 * scale), round(1333 * scale)
    return [(name, c, math.ceil(h / s), math.ceil(w / s)) for name, c, s in BACKBONE_STAGES]


class FRNBackend(FilterResponseNorm2d):
    """FRN+TLU through frn_fused with a fixed backend ("torch", "cpp" or "triton")."""

    def __init__(self, channels: int, backend: str):
        super().__init__(channels, impl="fused")
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return frn_fused(x, self.weight, self.bias, self.tau, self.eps, self.eps_l, backend=self.backend)


class EvoNormS0Triton(EvoNorm2dS0):
    """EvoNorm-S0 through the Triton kernels (not yet what the layer takes on CUDA)."""

    def forward(self, x):
        return evonorm_s0_triton(x, self.weight, self.bias, self.v, self.groups, self.eps)


class EvoNormB0Triton(EvoNorm2dB0):
    """EvoNorm-B0 through the Triton kernels, with the layer's running-variance update."""

    def forward(self, x):
        z, bvar = evonorm_b0_triton(x, self.weight, self.bias, self.v, None if self.training else self.running_var,
                                    self.eps)
        if self.training:
            self._update_running_var(bvar, x.numel() // x.shape[1])
        return z


class _PassGrad(torch.autograd.Function):
    """Returns y; its backward also runs a zero gradient into `w` (so that the weight
    standardization's backward is timed without touching the output)."""

    @staticmethod
    def forward(ctx, y, w):
        ctx.shape = w.shape
        return y.view_as(y)

    @staticmethod
    def backward(ctx, dy):
        return dy, dy.new_zeros(ctx.shape)


class GNWSRow(nn.Module):
    """GN + ReLU, plus standardizing (forward and backward) one 3x3 conv weight C x C."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels)
        self.conv_weight = nn.Parameter(torch.randn(channels, channels, 3, 3) * 0.01)

    def forward(self, x):
        return _PassGrad.apply(torch.relu(self.norm(x)), standardize_weight(self.conv_weight))


def _brn_after_ramp(channels: int) -> BatchRenorm2d:
    brn = BatchRenorm2d(channels)
    brn.num_batches_tracked.fill_(10**6)  # the ramp is over: r_max 3, d_max 5
    return brn


def comparator_impls(channels: int) -> Dict[str, Union[nn.Module, str]]:
    """The comparator norms, each with the activation that follows it in the model."""
    impls: Dict[str, Union[nn.Module, str]] = {
        "BN+TLU": nn.Sequential(nn.BatchNorm2d(channels), TLU(channels)),
        "GN+TLU": nn.Sequential(nn.GroupNorm(32, channels), TLU(channels)),
        "FRN+ReLU": nn.Sequential(FilterResponseNorm2d(channels, tlu=False), nn.ReLU()),
        # ramp finished at iteration 0: r and d computed and clipped at 3 / 5
        "BRN+ReLU": nn.Sequential(_brn_after_ramp(channels), nn.ReLU()),
        "GNWS+ReLU": GNWSRow(channels),
        "EvoNorm-B0": EvoNorm2dB0(channels),
        "EvoNorm-B0 reference": EvoNorm2dB0(channels, impl="reference"),
        "EvoNorm-S0": EvoNorm2dS0(channels),
        "EvoNorm-S0 reference": EvoNorm2dS0(channels, impl="reference"),
    }
    try:
        from timm.layers import EvoNorm2dB0 as TimmB0
        from timm.layers import EvoNorm2dS0 as TimmS0

        impls["EvoNorm-B0 timm"] = TimmB0(channels, eps=1e-5)
        impls["EvoNorm-S0 timm"] = TimmS0(channels, eps=1e-5)
    except ImportError:
        impls["EvoNorm-B0 timm"] = impls["EvoNorm-S0 timm"] = "skipped: timm not importable"
    return impls


def _mabn_in_use(channels: int) -> MABN2d:
    mabn = MABN2d(channels)
    mabn.num_batches_tracked.fill_(10**6)  # past warm-up and renormalization start: SMA and r in use
    return mabn


def _conv_row(channels: int, norm: Optional[nn.Module], adapt=None) -> nn.Sequential:
    """A 3x3 conv of the layer's width, the norm, ReLU; `adapt` applied as the builders do."""
    row = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), norm, nn.ReLU())
    if adapt is not None:
        assert adapt([row]) == 1
    return row


def small_batch_impls(channels: int) -> Dict[str, nn.Module]:
    """EvalNorm, IN, MABN, WN's bias (+ ReLU), and the conv rows (see the module docstring)."""
    return {
        "EvalNorm+ReLU": nn.Sequential(EvalNorm2d(channels), nn.ReLU()),
        "IN+ReLU": nn.Sequential(InstanceNorm2d(channels), nn.ReLU()),
        "MABN+ReLU": nn.Sequential(_mabn_in_use(channels), nn.ReLU()),
        "WN bias+ReLU": nn.Sequential(WNBias2d(channels), nn.ReLU()),
        "conv+BN+ReLU": _conv_row(channels, nn.BatchNorm2d(channels)),
        "conv+CBN+ReLU": _conv_row(channels, CrossIterationBatchNorm2d(channels, buffer_size=4, burnin=0),
                                   link_cbn_layers),
        "convWC+MABN+ReLU": _conv_row(channels, _mabn_in_use(channels), centralize_layers),
        "convWN+ReLU": _conv_row(channels, WNBias2d(channels), weight_normalize_layers),
    }


# --norms evonorm: the EvoNorm rows and what they are compared with
EVONORM_ROWS = ("FRN+TLU fused (Triton)", "FRN+TLU fused (C++)", "BN+ReLU", "GN+ReLU", "EvoNorm-B0", "EvoNorm-S0",
                "EvoNorm-B0 Triton", "EvoNorm-S0 Triton", "EvoNorm-B0 timm", "EvoNorm-S0 timm")


def build_impls(channels: int, device: torch.device, comparators: bool = True,
                small_batch: bool = True, only: Optional[Tuple[str, ...]] = None
                ) -> Dict[str, Union[nn.Module, str]]:
    """name -> module, or a string: why the implementation is skipped. comparators=False:
    without the comparator rows (BRN, GNWS, EvoNorm, ...); small_batch=False: without the
    small-batch rows (EvalNorm, CBN, MABN, IN, WN); only: these rows alone."""
    if only is not None:
        impls = build_impls(channels, device, comparators=True, small_batch=False)
        return {k: v for k, v in impls.items() if k in only}
    if not comparators and small_batch:  # --norms small-batch
        impls: Dict[str, Union[nn.Module, str]] = {
            "BN+ReLU": nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()),
            "GN+ReLU": nn.Sequential(nn.GroupNorm(32, channels), nn.ReLU()),
            **small_batch_impls(channels),
        }
        return {k: m.to(device) for k, m in impls.items()}
    impls = {
        "FRN+TLU reference": FilterResponseNorm2d(channels, impl="reference"),
        "FRN+TLU fused (torch)": FRNBackend(channels, "torch"),
    }
    if device.type != "cpu":
        impls["FRN+TLU fused (C++)"] = "skipped: CPU kernels"
    elif frn_cpp.ops() is None:
        impls["FRN+TLU fused (C++)"] = f"skipped: {frn_cpp.unavailable_reason()}"[:120]
    else:
        impls["FRN+TLU fused (C++)"] = FRNBackend(channels, "cpp")
    if device.type != "cuda":
        impls["FRN+TLU fused (Triton)"] = "skipped: CUDA kernels"
    elif not frn_triton.available():
        impls["FRN+TLU fused (Triton)"] = f"skipped: {frn_triton.unavailable_reason()}"[:120]
    else:
        impls["FRN+TLU fused (Triton)"] = FRNBackend(channels, "triton")
    try:
        from timm.layers import FilterResponseNormTlu2d

        impls["FRN+TLU timm"] = FilterResponseNormTlu2d(channels, eps=1e-6)
    except ImportError:
        impls["FRN+TLU timm"] = "skipped: timm not importable"
    impls["BN+ReLU"] = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
    impls["GN+ReLU"] = nn.Sequential(nn.GroupNorm(32, channels), nn.ReLU())
    if comparators:
        impls.update(comparator_impls(channels))
        for name, cls in (("EvoNorm-B0 Triton", EvoNormB0Triton), ("EvoNorm-S0 Triton", EvoNormS0Triton)):
            impls[name] = (cls(channels) if device.type == "cuda" and frn_triton.available()
                           else "skipped: CUDA kernels (triton available)")
    if comparators and small_batch:
        impls.update(small_batch_impls(channels))
    return {k: (m.to(device) if isinstance(m, nn.Module) else m) for k, m in impls.items()}


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during one forward of `module`."""
    return sum(saved_storages(module, x)[0].values())


def make_step(module: nn.Module, x: torch.Tensor, dz: torch.Tensor) -> Callable[[], None]:
    inputs = [x] + [p for p in module.parameters()]

    def step():
        torch.autograd.grad(module(x), inputs, dz)

    return step


def capture_graph(step: Callable[[], None]) -> Callable[[], None]:
    """A CUDA graph of `step` (warmed up on a side stream first, as torch.cuda.graph needs);
    returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    torch.cuda.synchronize()
    return graph.replay


def time_round_robin(fns: Dict[str, Callable[[], None]], repeats: int, warmup: int, sync,
                     min_seconds: float) -> Dict[str, float]:
    """Median seconds per call, calling the functions in turn.

    Each function is warmed up `warmup` times; then rounds run until there are at least
    `repeats` of them and `min_seconds` have passed (small shapes get more rounds)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_seconds and rounds < 50 * repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {k: statistics.median(v) for k, v in times.items()}


def bench_shape(label, n, c, h, w, dtype, device, repeats, warmup, min_seconds, comparators=True,
                cuda_graphs=False, small_batch=True, only=None) -> List[dict]:
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, device=device, dtype=dtype).requires_grad_()
    dz = torch.randn_like(x)
    impls = build_impls(c, device, comparators, small_batch, only)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    fns, rows, notes = {}, {}, {}
    for name, module in impls.items():
        if isinstance(module, str):
            notes[name] = module
            continue
        step = make_step(module, x, dz)
        try:
            step()
        except Exception as e:  # noqa: BLE001  e.g. a dtype an implementation lacks, batch statistics of 1 value
            notes[name] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
            continue
        fns[name] = step
        rows[name] = {"saved_mb": saved_bytes(module, x) / 2**20}
        if device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            rows[name]["cuda_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    dst = torch.empty_like(x)
    fns["copy_"] = lambda: dst.copy_(x.detach())
    if cuda_graphs:
        for name in list(rows):
            try:
                fns[f"{name} graph"] = capture_graph(fns[name])
            except Exception as e:  # noqa: BLE001  e.g. an op that syncs with the host cannot be captured
                rows[name]["graph_note"] = f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"
                torch.cuda.synchronize()
    med = time_round_robin(fns, repeats, warmup, sync, min_seconds)

    nbytes = x.numel() * x.element_size()
    copy_gbs = 2 * nbytes / med["copy_"] / 1e9
    shape = f"{label} {n}x{c}x{h}x{w}"
    out = []
    for name in impls:
        row = {"shape": shape, "impl": name, "dtype": str(dtype).replace("torch.", "")}
        if name not in rows:
            row["note"] = notes[name]
            out.append(row)
            continue
        t = med[name]
        row.update(rows[name])
        row["ms"] = t * 1e3
        for base, key in BASELINES.items():
            row[key] = t / med[base] if base in med else float("nan")
        row["eff_gbs"] = IDEAL_TENSOR_PASSES * nbytes / t / 1e9
        row["copy_gbs"] = copy_gbs
        row["x_bound"] = row["copy_gbs"] / row["eff_gbs"]
        if f"{name} graph" in med:
            row["graph_ms"] = med[f"{name} graph"] * 1e3
        out.append(row)
    return out


def print_table(rows: List[dict], dtype: str, device: str) -> None:
    cuda = device == "cuda"
    head = f"{'shape':<24} {'impl':<22} {'fwd+bwd ms':>10} {'x BN+ReLU':>9} {'x GN+ReLU':>9} {'saved MB':>9}"
    head += f" {'peak MB':>8}" if cuda else ""
    head += f" {'eff GB/s':>8} {'copy GB/s':>9} {'x bound':>7}"
    graphs = any("graph_ms" in r or "graph_note" in r for r in rows)
    head += f" {'graph ms':>8}" if graphs else ""
    load = f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs" if hasattr(os, "getloadavg") else ""
    gpu = f" ({torch.cuda.get_device_name()})" if cuda else ""
    print(f"\n== dtype {dtype}, device {device}{gpu}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}{load} ==")
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        shape = r["shape"] if r["shape"] != last else ""
        last = r["shape"]
        if "ms" not in r:
            print(f"{shape:<24} {r['impl']:<22} {r['note']}")
            continue
        line = (
            f"{shape:<24} {r['impl']:<22} {r['ms']:>10.3f} {r['x_bn_relu']:>9.2f} {r['x_gn_relu']:>9.2f}"
            f" {r['saved_mb']:>9.2f}"
        )
        line += f" {r.get('cuda_peak_mb', float('nan')):>8.1f}" if cuda else ""
        line += f" {r['eff_gbs']:>8.1f} {r['copy_gbs']:>9.1f} {r['x_bound']:>7.2f}"
        if graphs:
            line += f" {r['graph_ms']:>8.3f}" if "graph_ms" in r else f" graph failed: {r.get('graph_note', '-')}"
        print(line)
    print_summary(rows)
    if graphs:
        print_launch_overhead(rows)


def print_summary(rows: List[dict]) -> None:
    """Per implementation: the geometric mean, min and max over the shapes of x BN+ReLU."""
    by_impl: Dict[str, List[float]] = {}
    for r in rows:
        if "ms" in r and math.isfinite(r["x_bn_relu"]):
            by_impl.setdefault(r["impl"], []).append(r["x_bn_relu"])
    if not by_impl:
        return
    shapes = len(set(r["shape"] for r in rows))
    print(f"\n{'impl':<22} {'x BN+ReLU geomean':>17} {'min':>6} {'max':>6}   (over {shapes} shapes)")
    for name, ratios in by_impl.items():
        gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
        print(f"{name:<22} {gm:>17.2f} {min(ratios):>6.2f} {max(ratios):>6.2f}")
    conv_rows: Dict[str, List[float]] = {}
    for r in rows:
        if r["impl"].startswith("conv") and "ms" in r and math.isfinite(r["x_conv_bn_relu"]):
            conv_rows.setdefault(r["impl"], []).append(r["x_conv_bn_relu"])
    if conv_rows:
        print(f"\n{'impl':<22} {'x conv+BN+ReLU geomean':>22} {'min':>6} {'max':>6}")
        for name, ratios in conv_rows.items():
            gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
            print(f"{name:<22} {gm:>22.2f} {min(ratios):>6.2f} {max(ratios):>6.2f}")


def print_launch_overhead(rows: List[dict]) -> None:
    """Per implementation and shape: eager ms, CUDA-graph replay ms and their difference
    (the launch and Python overhead that a graph removes), for the smallest maps."""
    timed = [r for r in rows if "graph_ms" in r]
    if not timed:
        return
    sizes = sorted({r["shape"] for r in timed}, key=lambda sh: math.prod(int(v) for v in sh.split()[-1].split("x")))
    small = set(sizes[: max(1, len(sizes) // 4)])  # the smallest quarter of the shapes
    print("\nlaunch overhead at the smallest maps: eager ms - CUDA graph ms (share of eager)")
    print(f"{'shape':<24} {'impl':<22} {'eager ms':>9} {'graph ms':>9} {'overhead':>9} {'share':>6}")
    for r in timed:
        if r["shape"] in small:
            over = r["ms"] - r["graph_ms"]
            print(f"{r['shape']:<24} {r['impl']:<22} {r['ms']:>9.3f} {r['graph_ms']:>9.3f} {over:>9.3f}"
                  f" {over / r['ms']:>6.0%}")


def _host_us(fn: Callable[[], None], calls: int) -> Tuple[float, float]:
    """(host us per call, wall us per call) of `calls` calls queued without synchronizing."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) / calls * 1e6, (t2 - t0) / calls * 1e6


def host_cost(dtype: torch.dtype, calls: int = 300) -> List[dict]:
    """The host side of one forward+backward call at a P7-sized map, and of one launch of the
    Triton forward kernel alone (see the module docstring); printed and returned as rows."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    x = torch.randn(1, 256, 8, 8, device=device, dtype=dtype).requires_grad_()
    dz = torch.randn_like(x)
    rows = []
    frn = FRNBackend(256, "triton").to(device)
    impls = {"FRN+TLU Triton, direct launches": (frn, True), "FRN+TLU Triton, kernel[grid]": (frn, False),
             "BN+ReLU": (nn.Sequential(nn.BatchNorm2d(256), nn.ReLU()).to(device), None),
             "GN+ReLU": (nn.Sequential(nn.GroupNorm(32, 256), nn.ReLU()).to(device), None)}
    for name, (module, direct) in impls.items():
        saved = frn_triton.DIRECT_LAUNCH
        if direct is not None:
            frn_triton.DIRECT_LAUNCH = direct
        try:
            host, wall = _host_us(make_step(module, x, dz), calls)
        finally:
            frn_triton.DIRECT_LAUNCH = saved
        rows.append({"what": f"fwd+bwd call, {name}", "host_us": host, "wall_us": wall})
    # one launch of the forward tile kernel alone
    from frn_det.layers.frn.triton_kernels import kernels

    xd = x.detach()
    z, r = torch.empty_like(xd), torch.empty(1, 256, device=device)
    p = frn_triton.plan(64, 256, frn_triton.sm_count(device.index or 0))
    args = (xd, z, r, frn.weight, frn.bias, frn.tau, frn.weight, 1e-6, 256, 256, 64)
    consts = (("HAS_TAU", True), ("HAS_EPS_L", False), ("ROWS", p.rows), ("BLOCK", p.block))
    grid = (-(-256 // p.rows),)
    for name, direct in (("direct (cached compiled kernel)", True), ("kernel[grid]", False)):
        saved = frn_triton.DIRECT_LAUNCH
        frn_triton.DIRECT_LAUNCH = direct
        try:
            host, wall = _host_us(lambda: frn_triton.launch(kernels().fwd_tile, grid, args, consts, p.num_warps,
                                                             device), calls)
        finally:
            frn_triton.DIRECT_LAUNCH = saved
        rows.append({"what": f"one forward launch, {name}", "host_us": host, "wall_us": wall})
    print(f"\n== host cost per call, 1x256x8x8 {str(dtype).replace('torch.', '')}, {torch.cuda.get_device_name()},"
          f" {calls} calls queued ==")
    print(f"{'':<52} {'host us':>8} {'wall us':>8}")
    for row in rows:
        print(f"{row['what']:<52} {row['host_us']:>8.1f} {row['wall_us']:>8.1f}")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", choices=[1, 2, 4, 8, 16], default=None, help="default 1 2")
    p.add_argument("--shapes", choices=["head", "backbone", "all"], default=None, help="default head")
    p.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16", "float16"], default=["float32"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeats", type=int, default=None, help="minimum timed rounds per shape (default 25, quick 9)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per implementation and shape (default 10, quick 3)")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="keep adding rounds until this much time per shape (default 1.0, quick 0.4)")
    p.add_argument("--image-size", type=int, default=None, help="head image side (default 512 CPU, 1024 CUDA)")
    p.add_argument("--backbone-scale", type=float, default=None, help="of 800x1333 (default 0.25 CPU, 1.0 CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--quick", action="store_true",
                   help="head shapes unless --shapes, batch 1 and 2 unless --batch, fewer rounds")
    p.add_argument("--norms", choices=["all", "frn", "small-batch", "evonorm"], default="all",
                   type=lambda v: {"round2": "small-batch"}.get(v, v),  # its old name, still accepted
                   help="all: FRN and the comparator norms (default); frn: the FRN rows and BN/GN+ReLU only; "
                        "small-batch: EvalNorm, CBN, MABN, IN, WN and BN/GN+ReLU only; evonorm: EvoNorm-B0/S0 "
                        "(frn-det's and timm's), the fused FRN+TLU and BN/GN+ReLU only")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="CUDA only: also time each implementation replayed from a CUDA graph")
    p.add_argument("--host-cost", action="store_true",
                   help="CUDA only: also measure the host time per call and per launch (see above)")
    p.add_argument("--json", type=Path, default=None, help="also write all rows to this JSON file")
    args = p.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    if args.cuda_graphs and args.device != "cuda":
        p.error("--cuda-graphs needs --device cuda")
    if args.host_cost and args.device != "cuda":
        p.error("--host-cost needs --device cuda (under Triton's CPU interpreter nothing is compiled to launch)")
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.shapes, args.batch = args.shapes or "head", args.batch or [1, 2]
        args.repeats = args.repeats or 9
        args.warmup = 3 if args.warmup is None else args.warmup
        args.min_seconds = 0.4 if args.min_seconds is None else args.min_seconds
    batches = args.batch or [1, 2]
    args.warmup = 10 if args.warmup is None else args.warmup
    args.min_seconds = 1.0 if args.min_seconds is None else args.min_seconds
    repeats = args.repeats or 25
    image = args.image_size or (512 if cpu else 1024)
    scale = args.backbone_scale or (0.25 if cpu else 1.0)
    args.shapes = args.shapes or "head"
    shapes = []
    if args.shapes in ("backbone", "all"):
        shapes += backbone_shapes(scale)
    if args.shapes in ("head", "all"):
        shapes += head_shapes(image)

    cpp_status = None
    if cpu:
        t0 = time.perf_counter()
        cpp_status = "available" if frn_cpp.ops() is not None else f"unavailable: {frn_cpp.unavailable_reason()}"
        print(f"C++ kernels {cpp_status} ({time.perf_counter() - t0:.1f} s to build or load;"
              f" {frn_cpp.build_directory()})")
    triton_status = None
    if device.type == "cuda":
        triton_status = "available" if frn_triton.available() else f"unavailable: {frn_triton.unavailable_reason()}"
        print(f"Triton kernels {triton_status}")

    all_rows = []
    t_start = time.perf_counter()
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        rows = []
        for label, c, h, w in shapes:
            for n in batches:
                rows += bench_shape(label, n, c, h, w, dtype, device, repeats, args.warmup, args.min_seconds,
                                    comparators=args.norms == "all", cuda_graphs=args.cuda_graphs,
                                    small_batch=args.norms in ("all", "small-batch"),
                                    only=EVONORM_ROWS if args.norms == "evonorm" else None)
        print_table(rows, dtype_name, args.device)
        all_rows += rows
    host_rows = host_cost(getattr(torch, args.dtype[0])) if args.host_cost else []
    print(
        f"\n({time.perf_counter() - t_start:.1f} s; per shape: {args.warmup} warm-up calls, then the median of"
        f" >= {repeats} round-robin rounds filling >= {args.min_seconds} s)"
    )
    if args.json:
        meta = {
            "torch": torch.__version__,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "image_size": image,
            "backbone_scale": scale,
            "ideal_tensor_passes": IDEAL_TENSOR_PASSES,
            "cpp_kernels": cpp_status,
            "triton_kernels": triton_status,
            "device_name": torch.cuda.get_device_name() if device.type == "cuda" else None,
        }
        write_text_atomic(args.json, json.dumps({"meta": meta, "rows": all_rows, "host_cost": host_rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
