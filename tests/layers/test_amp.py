"""Mixed precision: under autocast every norm reduces its statistics in float32.

A conv under autocast hands the norm a bf16 (CPU) or fp16/bf16 (CUDA) tensor. Each norm's
output is compared with the same module in float64 on the same (rounded) input: with
float32 statistics and one final rounding, all but a few elements on a rounding boundary
equal float64's result rounded to the output dtype (measured: at most 0.008%). A statistic
rounded to bf16 scales or shifts whole planes by a fraction of an ulp, and about 12% of the
elements differ (test_check_catches_low_precision_statistics). Buffers (running mean/var)
must stay float32 and match float64.

CPU with bf16 autocast always; CUDA (fp16 and bf16) where a GPU exists, with the Triton FRN
kernels and torch's SyncBatchNorm on one GPU.
"""
import copy

import pytest
import torch
from torch import nn

from frn_det.layers import FRNOptions
from frn_det.layers.factory import resolve_norm
from frn_det.layers.frn import FilterResponseNorm2d

# (config norm string, FRN impl or None): every norm of the sweep's norm group
NORMS = [("FRN", "reference"), ("FRN", "fused"), ("FRN", "auto"), ("FRN+ReLU", "auto"), ("BN", None),
         ("SyncBN", None), ("GN", None), ("GNWS", None), ("BRN", None), ("EvoNormB0", None), ("EvoNormS0", None)]
# float32 statistics and one rounding: a few elements on a rounding boundary differ; a
# statistic rounded to bf16 shifts whole planes by a fraction of an ulp: 5-20% differ
MAX_MISMATCH = 0.01

DEVICES = [("cpu", torch.bfloat16)]
if torch.cuda.is_available():
    DEVICES += [("cuda", torch.float16), ("cuda", torch.bfloat16)]


def build_norm(spec, impl, channels):
    options = FRNOptions(impl=impl) if impl else None
    module = resolve_norm(spec, key="test", options=options)(channels)
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial affine parameters
        for name, p in module.named_parameters():
            p.copy_(torch.empty_like(p).uniform_(0.5, 1.5) if name in ("weight", "v") else torch.randn_like(p) * 0.1)
    return module


def mismatch(y, y64):
    """Fraction of the elements of y that differ from float64's result rounded to y's dtype
    (for float32 outputs: that differ by more than 1e-5 of the output's scale)."""
    if y.dtype == torch.float32:
        return ((y.double() - y64).abs() > 1e-5 * y64.abs().max()).double().mean().item()
    return (y != y64.to(y.dtype)).double().mean().item()


def conv_input(device, dtype, n=2, c=32, hw=48):
    """A conv's output under autocast: low precision, per-channel means away from 0 (so
    that BN's mean matters) and of the order of the spread (so that the fit is well posed)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, c, 3, padding=1).to(device)
    x_in = torch.randn(n, 8, hw, hw, device=device) + 1.0
    with torch.autocast(device, dtype=dtype):
        x = conv(x_in)
    assert x.dtype == dtype
    return x.detach()


def check_statistics(module, x, device, dtype):
    """Runs module (training mode, under autocast) and its float64 copy on the same input."""
    ref = copy.deepcopy(module).double()
    module.train(), ref.train()
    xg = x.clone().requires_grad_()
    with torch.autocast(device, dtype=dtype):
        y = module(xg)
    y.float().square().sum().backward()
    y64 = ref(x.double())
    assert y.dtype in (dtype, torch.float32)
    assert torch.isfinite(y).all() and torch.isfinite(xg.grad).all()
    assert mismatch(y.cpu(), y64.cpu()) < MAX_MISMATCH
    for (name, buf), (_, buf64) in zip(module.named_buffers(), ref.named_buffers()):
        if buf.is_floating_point():
            assert buf.dtype == torch.float32, name
            torch.testing.assert_close(buf.double(), buf64, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("device, dtype", DEVICES, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("spec, impl", NORMS, ids=lambda v: str(v))
def test_statistics_in_float32_under_autocast(spec, impl, device, dtype):
    module = build_norm(spec, impl, 32).to(device)
    check_statistics(module, conv_input(device, dtype), device, dtype)


class _Bf16FRN(FilterResponseNorm2d):
    """A deliberately wrong FRN: nu2 rounded to the input's dtype."""

    def forward(self, x):
        nu2 = x.square().mean((2, 3), keepdim=True)  # bf16 in, bf16 out
        y = x.float() * torch.rsqrt(nu2.float() + self.eps) * self.weight.view(1, -1, 1, 1)
        return (y + self.bias.view(1, -1, 1, 1)).to(x.dtype)


def test_check_catches_low_precision_statistics():
    module = _Bf16FRN(32, tlu=False)
    with pytest.raises(AssertionError):
        check_statistics(module, conv_input("cpu", torch.bfloat16), "cpu", torch.bfloat16)
