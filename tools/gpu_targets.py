#!/usr/bin/env python
"""Issue 29's targets against what one tools/gpu_check.sh run measured: reads the JSON files
of tools/benchmark_frn.py (--norms frn and --norms evonorm) and tools/benchmark_model.py and
prints one line per target, with the measured ratio and "met" / "MISSED" / "not measured".

    python tools/gpu_targets.py --frn frn.json --evonorm evonorm.json --model model.json

Targets (issue 29):
  per layer    FRN+TLU forward+backward <= 1.0x cuDNN BN+ReLU at every shape, batch, dtype
  large maps   FRN+TLU <= 1.2x the bandwidth bound (inputs of LARGE_MIB or more)
  whole model  FRN <= 1.05x BN's training s/iter at 2 images per GPU, fp32 and AMP, per
               model; step peak memory <= BN's
  EvoNorm      B0 and S0 <= 1.5x BN+ReLU, geomean over the shapes (the layers, and the Triton
               kernels of layers/norms/evonorm_triton.py where timed)
The FRN rows are the Triton kernels' where the run has them (CUDA), else the C++ kernels'
or the torch function's (a CPU rehearsal), and the line says which.
"""
import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

PER_LAYER_MAX = 1.0
BOUND_MAX = 1.2
MODEL_MAX = 1.05
MODEL_IMAGES = 2
EVONORM_MAX = 1.5
LARGE_MIB = 32  # "large maps": an input of at least this many MiB
FRN_ROWS = ("FRN+TLU fused (Triton)", "FRN+TLU fused (C++)", "FRN+TLU fused (torch)")
# the layers as they run today (the reference on CUDA), and the Triton kernels not yet wired in
EVONORM_ROWS = ("EvoNorm-B0", "EvoNorm-S0", "EvoNorm-B0 Triton", "EvoNorm-S0 Triton")
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _load(path: Optional[Path]) -> Optional[dict]:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _geomean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _frn_rows(rows: List[dict]) -> tuple:
    """(impl name, its timed rows): the first of FRN_ROWS the run timed."""
    for impl in FRN_ROWS:
        timed = [r for r in rows if r.get("impl") == impl and "ms" in r]
        if timed:
            return impl, timed
    return None, []


def _mib(row: dict) -> float:
    dims = [int(v) for v in row["shape"].split()[-1].split("x")]
    return math.prod(dims) * BYTES[row["dtype"]] / 2**20


def per_layer_lines(data: Optional[dict]) -> List[str]:
    if not data:
        return [f"per layer: FRN+TLU <= {PER_LAYER_MAX}x BN+ReLU: not measured (no benchmark_frn JSON)",
                f"large maps: FRN+TLU <= {BOUND_MAX}x the bandwidth bound: not measured"]
    impl, rows = _frn_rows(data["rows"])
    if not rows:
        return ["per layer: not measured (no FRN+TLU fused row in the benchmark)"]
    lines = []
    for dtype in sorted({r["dtype"] for r in rows}):
        sub = [r for r in rows if r["dtype"] == dtype and math.isfinite(r["x_bn_relu"])]
        worst = max(sub, key=lambda r: r["x_bn_relu"])
        over = [r for r in sub if r["x_bn_relu"] > PER_LAYER_MAX]
        lines.append(f"per layer, {dtype}: {impl} x BN+ReLU over {len(sub)} shapes: geomean "
                     f"{_geomean([r['x_bn_relu'] for r in sub]):.2f}, max {worst['x_bn_relu']:.2f} ({worst['shape']}),"
                     f" {len(over)} above {PER_LAYER_MAX}: {_verdict(not over)}")
    large = [r for r in rows if _mib(r) >= LARGE_MIB]
    if large:
        worst = max(large, key=lambda r: r["x_bound"])
        lines.append(f"large maps (>= {LARGE_MIB} MiB, {len(large)} shapes): x bandwidth bound max "
                     f"{worst['x_bound']:.2f} ({worst['shape']} {worst['dtype']}), geomean "
                     f"{_geomean([r['x_bound'] for r in large]):.2f}, target <= {BOUND_MAX}: "
                     f"{_verdict(worst['x_bound'] <= BOUND_MAX)}")
    else:
        lines.append(f"large maps: no input of {LARGE_MIB} MiB or more in this run: not measured")
    return lines


def model_lines(data: Optional[dict]) -> List[str]:
    if not data:
        return [f"whole model: FRN <= {MODEL_MAX}x BN s/iter at {MODEL_IMAGES} images: not measured (no JSON)"]
    rows = [r for r in data["rows"] if r["norm"] == "FRN" and r["batch"] == MODEL_IMAGES]
    lines = []
    for r in rows:
        peak = r.get("step_peak_x_bn")
        peak_text = "" if peak is None else f", step peak memory {peak:.2f}x BN ({_verdict(peak <= 1.0)})"
        lines.append(f"whole model, {r['model']}, {MODEL_IMAGES} images, {r['precision']}: FRN "
                     f"{r['train_x_bn']:.2f}x BN s/iter ({r['train_s_per_iter']:.3f} s), target <= {MODEL_MAX}: "
                     f"{_verdict(r['train_x_bn'] <= MODEL_MAX)}{peak_text}")
    for model, batch, precision in data.get("failed", []):
        lines.append(f"whole model, {model}, {batch} images, {precision}: FAILED in the benchmark")
    return lines or [f"whole model: no FRN row at {MODEL_IMAGES} images in the benchmark: not measured"]


def evonorm_lines(data: Optional[dict]) -> List[str]:
    if not data:
        return [f"EvoNorm-B0/S0 <= {EVONORM_MAX}x BN+ReLU (geomean): not measured (no JSON)"]
    lines = []
    by_impl: Dict[str, List[float]] = {}
    for r in data["rows"]:
        if r["impl"] in EVONORM_ROWS and "ms" in r and math.isfinite(r["x_bn_relu"]):
            by_impl.setdefault(f"{r['impl']} {r['dtype']}", []).append(r["x_bn_relu"])
    for name, ratios in sorted(by_impl.items()):
        gm = _geomean(ratios)
        lines.append(f"{name}: x BN+ReLU geomean {gm:.2f} over {len(ratios)} shapes (max {max(ratios):.2f}),"
                     f" target <= {EVONORM_MAX}: {_verdict(gm <= EVONORM_MAX)}")
    return lines or ["EvoNorm: no timed EvoNorm row: not measured"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frn", type=Path, help="tools/benchmark_frn.py --norms frn --json")
    p.add_argument("--evonorm", type=Path, help="tools/benchmark_frn.py --norms evonorm --json")
    p.add_argument("--model", type=Path, help="tools/benchmark_model.py --json")
    args = p.parse_args(argv)
    frn, evo, model = _load(args.frn), _load(args.evonorm), _load(args.model)
    device = next((d["meta"].get("device_name") for d in (frn, evo) if d and d["meta"].get("device_name")), None)
    device = device or (model or {}).get("device_name") or "device unknown"
    print(f"issue 29 targets, measured in this run on {device}:")
    for line in per_layer_lines(frn) + model_lines(model) + evonorm_lines(evo):
        print("  " + line)
    host = (frn or {}).get("host_cost") or []
    for row in host:
        print(f"  host cost: {row['what']}: {row['host_us']:.1f} us on the host per call"
              f" ({row['wall_us']:.1f} us wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
