#!/usr/bin/env python
"""A first look at the two Triton FRN paths that only exist compiled on a GPU, before the
tests and benchmarks rely on them (tools/gpu_check.sh runs it under `timeout`):

* the one-launch split (the programs of a plane wait for each other on a counter): a plane
  too large for one program (P3 of an 800x1333 image), forward and backward, must give the
  bits of the two-launch fallback; a hang here is a deadlock (the script is then killed);
* direct launches of the cached compiled kernels must give the bits of `kernel[grid]`.

Prints one line per path and exits 0 if both agree, else 10 + 1 (the one-launch split
disagrees) + 2 (the direct launches disagree); gpu_check.sh then turns that path off for the
rest of its run (FRN_DET_TRITON_ONE_PASS=0, FRN_DET_TRITON_DIRECT=0). Exit 2: no CUDA.

    python tools/check_triton_paths.py
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from frn_det.layers.frn import frn_fused  # noqa: E402
from frn_det.layers.frn import triton_backend as frn_triton  # noqa: E402


def run(shape, direct: bool, one_pass: bool):
    frn_triton.DIRECT_LAUNCH, frn_triton.ONE_PASS = direct, one_pass
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).cuda().requires_grad_()
    dz = torch.randn(shape, generator=g).cuda()
    c = shape[1]
    params = [(torch.rand(c, generator=g) + 0.5).cuda().requires_grad_(), (0.1 * torch.randn(c, generator=g)).cuda()
              .requires_grad_(), (0.1 * torch.randn(c, generator=g)).cuda().requires_grad_(),
              (1e-3 * torch.randn(c, generator=g)).cuda().requires_grad_()]
    frn_triton.launch_stats.reset()
    t0 = time.perf_counter()
    out = frn_fused(x, *params[:3], 1e-6, params[3], backend="triton")
    grads = torch.autograd.grad(out, [x] + params, dz)
    torch.cuda.synchronize()
    stats = frn_triton.launch_stats
    return [out, *grads], time.perf_counter() - t0, dict(stats.layouts), stats.direct


def main() -> int:
    if not torch.cuda.is_available() or not frn_triton.available():
        print(f"check_triton_paths: needs CUDA and triton (cuda {torch.cuda.is_available()}, "
              f"triton: {frn_triton.unavailable_reason() or 'available'})")
        return 2
    split = (2, 256, 100, 167)
    base, t_base, layouts_base, _ = run(split, direct=False, one_pass=False)
    one, t_one, layouts_one, _ = run(split, direct=False, one_pass=True)
    same = all(torch.equal(a, b) for a, b in zip(one, base))
    print(f"one-launch split {split}: {layouts_one} vs {layouts_base}, same bits: {same} "
          f"(first calls, compile included: {t_one:.1f} s / {t_base:.1f} s)", flush=True)
    one_pass_bad = not (same and layouts_one.get("split one-pass"))
    tile = (2, 256, 7, 11)
    ref, _, _, _ = run(tile, direct=False, one_pass=True)
    run(tile, direct=True, one_pass=True)  # caches the compiled kernels
    got, _, _, direct_calls = run(tile, direct=True, one_pass=True)
    same_direct = all(torch.equal(a, b) for a, b in zip(got, ref))
    print(f"direct launches {tile}: {direct_calls} direct calls, same bits as kernel[grid]: {same_direct}")
    direct_bad = not (same_direct and direct_calls)
    return 10 + one_pass_bad + 2 * direct_bad if one_pass_bad or direct_bad else 0


if __name__ == "__main__":
    sys.exit(main())
