"""The fused FRN(+TLU) implementations against the op-by-op reference: the PyTorch
autograd function (backend "torch") and the C++ CPU kernels (backend "cpp")."""
import functools
import importlib.util
import logging
import os
import shlex
import shutil
import time

import pytest
import torch
from frn_testing import (
    EPS,
    assert_low_precision_close_to_reference,
    make_params,
    module_against_reference,
    ref_forward,
    run,
    saved_storages,
)

from frn_det.layers import cpu_ops as frn_cpp  # the C++ library loader (was layers/frn_cpp.py)
from frn_det.layers.frn import FilterResponseNorm2d
from frn_det.layers.frn import fused as fused_mod
from frn_det.layers.frn.fused import frn_fused

# grad_fn name of the C++ op (its autograd is a torch::autograd::Function in frn_cpu.cpp)
CPP_GRAD_FN = "torch::autograd::CppNode<frn_det::FRNAutograd>"

# (N, C, H, W): odd sizes, 1x1 maps, N = 1
SHAPES = [(2, 8, 5, 7), (1, 6, 1, 1), (3, 4, 1, 1), (1, 5, 9, 4), (4, 3, 8, 8)]


@functools.lru_cache(maxsize=None)
def cpp_build_seconds():
    """Builds (or loads) the C++ extension once per session; the time it took."""
    t0 = time.perf_counter()
    frn_cpp.ops()
    return time.perf_counter() - t0


def require_cpp():
    cpp_build_seconds()
    if frn_cpp.ops() is None:
        pytest.skip(f"FRN C++ extension unavailable: {frn_cpp.unavailable_reason()}")


@pytest.fixture(params=["torch-generic", "torch-native", "cpp"])
def backend(request, monkeypatch):
    """Each test runs through the C++ kernels and both routes of the PyTorch function:
    the addcmul/sum route and the batch-norm-kernel route."""
    if request.param == "cpp":
        require_cpp()
        return "cpp"
    monkeypatch.setattr(fused_mod, "_NATIVE_MIN_NUMEL", 1 << 62 if request.param == "torch-generic" else 0)
    return "torch"


def fused(backend):
    def fn(x, weight, bias, tau, eps_l):
        return frn_fused(x, weight, bias, tau, EPS, eps_l, backend=backend)

    return fn


def assert_close_all(got, want, rtol, atol_scale):
    """Each tensor within rtol plus an absolute tolerance scaled by the reference's magnitude."""
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol_scale * w.abs().max().item() + 1e-30)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tlu", [True, False])
@pytest.mark.parametrize("learn_eps", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_reference_float64(backend, shape, tlu, learn_eps, channels_last):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    dz = torch.randn(shape, generator=g, dtype=torch.float64)
    params = make_params(shape[1], tlu, learn_eps)
    out, grads = run(fused(backend), x, params, dz)
    ref_out, ref_grads = run(ref_forward, x, params, dz)
    assert_close_all([out] + grads, [ref_out] + ref_grads, rtol=1e-10, atol_scale=1e-12)
    assert len(grads) == 3 + tlu + learn_eps
    if channels_last and backend == "torch":  # the torch function keeps the layout
        assert out.is_contiguous(memory_format=torch.channels_last)
    if backend == "cpp":  # the kernels work on (and return) NCHW-contiguous tensors
        assert out.is_contiguous()


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 2, 1, 1), (3, 2, 3, 1)])
@pytest.mark.parametrize("tlu", [True, False])
@pytest.mark.parametrize("learn_eps", [False, True])
def test_gradcheck(backend, shape, tlu, learn_eps):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    params = [p.requires_grad_() if p is not None else None for p in make_params(shape[1], tlu, learn_eps, seed=3)]
    assert torch.autograd.gradcheck(fused(backend), (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


# H*W below, at and above the C++ kernels' partial-sum block (256), not multiples of it
@pytest.mark.parametrize("shape", [(2, 16, 13, 11), (1, 32, 64, 64), (2, 8, 1, 1), (1, 4, 37, 29), (2, 3, 16, 16)])
@pytest.mark.parametrize("tlu", [True, False])
def test_float32_matches_reference(backend, shape, tlu):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=g)
    dz = torch.randn(shape, generator=g)
    params = make_params(shape[1], tlu, learn_eps=True, dtype=torch.float32)
    out, grads = run(fused(backend), x, params, dz)
    ref_out, ref_grads = run(ref_forward, x, params, dz)
    assert out.dtype == torch.float32
    assert_close_all([out] + grads, [ref_out] + ref_grads, rtol=1e-4, atol_scale=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (2, 16, 48, 48)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_low_precision_close_to_float32_reference(backend, dtype, shape, channels_last):
    """bf16/fp16 in and out, statistics in float32: compared with the float32 reference
    of the same (rounded) inputs. Tolerances are a few units of the format's rounding.
    (backend "cpp" computes in float32 and rounds the output and dx.)"""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=g).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    dz = torch.randn(shape, generator=g).to(dtype)
    params = make_params(shape[1], tlu=True, learn_eps=True, dtype=torch.float32)
    assert_low_precision_close_to_reference(fused(backend), x, params, dz)


@pytest.mark.parametrize("tlu", [True, False])
@pytest.mark.parametrize("learnable_eps", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_module_fused_equals_reference(tlu, learnable_eps, dtype):
    fused, ref, x, results = module_against_reference("fused", (3, 24, 10, 9), tlu, learnable_eps, dtype)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[1][0], results[0][0], **tol)
    for g_fused, g_ref in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(g_fused, g_ref, **tol)
    # "auto" takes the fused path too
    auto = FilterResponseNorm2d(24, tlu=tlu, learnable_eps=learnable_eps, impl="auto").to(dtype)
    auto.load_state_dict(ref.state_dict())
    torch.testing.assert_close(auto(x), results[1][0], rtol=0, atol=0)


def saved_bytes(fn, x):
    """Bytes of the distinct storages autograd saves during one forward of fn(x)."""
    storages, out = saved_storages(fn, x)
    return sum(storages.values()), out


def test_saved_memory_is_input_plus_statistics():
    n, c = 4, 64
    x = torch.randn(n, c, 32, 32, requires_grad=True)
    input_bytes = x.numel() * x.element_size()
    stats_allowance = 4 * (n * c + c) * 4  # a few float32 (N, C) and (C,) tensors

    fused_bytes, out = saved_bytes(FilterResponseNorm2d(c, impl="fused"), x)
    assert input_bytes <= fused_bytes <= input_bytes + stats_allowance
    out.sum().backward()  # what was saved suffices for the backward
    assert x.grad is not None and torch.isfinite(x.grad).all()

    ref_bytes, _ = saved_bytes(FilterResponseNorm2d(c, impl="reference"), x)
    assert ref_bytes > 2 * input_bytes
    assert fused_bytes < ref_bytes / 2


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("learn_eps", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_saves_only_input_and_per_sample_channel_statistic(contiguous, learn_eps, dtype):
    """The C++ path saves x (or its NCHW copy) in its own dtype, r per (n, c) in float32,
    and the parameters themselves (no copies of them)."""
    require_cpp()
    n, c = 3, 32
    x = torch.randn(n, c, 24, 20) if contiguous else torch.randn(n, 24, 20, c).permute(0, 3, 1, 2)
    x = x.to(dtype).requires_grad_()
    frn = FilterResponseNorm2d(c, learnable_eps=learn_eps)
    param_bytes = sum(p.numel() * p.element_size() for p in frn.parameters())
    input_bytes = x.numel() * x.element_size()

    saved, out = saved_bytes(lambda t: frn_fused(t, frn.weight, frn.bias, frn.tau, frn.eps, frn.eps_l,
                                                 backend="cpp"), x)
    assert out.grad_fn.name() == CPP_GRAD_FN
    assert saved <= input_bytes + n * c * 4 + param_bytes
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_cpp_reads_parameters_of_any_float_dtype_and_stride():
    """The kernels read (C,) parameters of any float dtype and stride directly (no
    converted copies); gradients come back in each parameter's dtype."""
    require_cpp()
    c = 6
    x = torch.randn(2, c, 5, 5, requires_grad=True)
    weight = torch.randn(2 * c, dtype=torch.float64)[::2].requires_grad_()  # strided view
    bias = (0.5 * torch.randn(c)).bfloat16().requires_grad_()
    tau = torch.zeros(c, dtype=torch.float16).requires_grad_()
    eps_l = torch.full((c,), 1e-3, requires_grad=True)
    out = frn_fused(x, weight, bias, tau, EPS, eps_l, backend="cpp")
    assert out.grad_fn.name() == CPP_GRAD_FN
    params = [weight, bias, tau, eps_l]
    grads = torch.autograd.grad(out.sum(), [x] + params)
    assert [g.dtype for g in grads] == [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.float32]
    ref_params = [p.detach().float().requires_grad_() for p in params]
    ref_x = x.detach().clone().requires_grad_()
    ref = ref_forward(ref_x, *ref_params)
    ref_grads = torch.autograd.grad(ref.sum(), [ref_x] + ref_params)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], ref_grads[0], rtol=1e-4, atol=1e-4)
    for got, want in zip(grads[1:], ref_grads[1:]):
        torch.testing.assert_close(got.float(), want.to(got.dtype).float(), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cpp_thread_count_does_not_change_results(dtype):
    """Planes are split between threads and the per-channel sums over n are taken in a
    fixed order: bitwise equal results for 1 and 2 threads."""
    require_cpp()
    x = torch.randn(4, 16, 48, 48).to(dtype)
    dz = torch.randn_like(x)
    params = make_params(16, tlu=True, learn_eps=True, dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out, grads = run(fused("cpp"), x, params, dz)
            results.append([out] + grads)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_auto_backend_selection(monkeypatch):
    require_cpp()
    params = [p.requires_grad_() for p in make_params(4, tlu=True, learn_eps=False, dtype=torch.float32)[:3]]

    def grad_fn_name(x, backend="auto"):
        return frn_fused(x, *params, EPS, None, backend=backend).grad_fn.name()

    x = torch.randn(2, 4, 6, 6)
    assert grad_fn_name(x) == CPP_GRAD_FN
    assert grad_fn_name(x.double()) == CPP_GRAD_FN
    assert grad_fn_name(x[:, :, ::2]) == CPP_GRAD_FN  # strided: copied to NCHW
    assert grad_fn_name(x.to(memory_format=torch.channels_last)) == "FRNFunctionBackward"  # keeps layout
    assert grad_fn_name(x.bfloat16()) == CPP_GRAD_FN
    assert grad_fn_name(x.half()) == CPP_GRAD_FN
    assert grad_fn_name(x, backend="torch") == "FRNFunctionBackward"
    assert FilterResponseNorm2d(4, impl="fused")(x).grad_fn.name() == CPP_GRAD_FN
    with pytest.raises(ValueError, match="backend"):
        frn_fused(x, *params, EPS, None, backend="cuda")
    # FRN_DET_NO_CPP is read once per process, at the first use: start over
    monkeypatch.setenv("FRN_DET_NO_CPP", "1")
    monkeypatch.setattr(frn_cpp, "_ops", frn_cpp._NOT_YET)
    monkeypatch.setattr(frn_cpp, "_reason", None)
    assert grad_fn_name(x) == "FRNFunctionBackward"
    with pytest.raises(RuntimeError, match="FRN_DET_NO_CPP"):
        grad_fn_name(x, backend="cpp")


def test_build_failure_falls_back_with_one_warning(monkeypatch, caplog):
    def broken_build():
        raise RuntimeError("Error building extension 'frn_det_cpu'\nfrn_cpu.cpp:1: error: no compiler here")

    monkeypatch.delenv("FRN_DET_NO_CPP", raising=False)
    monkeypatch.setattr(frn_cpp, "_build", broken_build)
    monkeypatch.setattr(frn_cpp, "_ops", frn_cpp._NOT_YET)
    monkeypatch.setattr(frn_cpp, "_reason", None)
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    frn = FilterResponseNorm2d(3)
    with caplog.at_level(logging.WARNING, logger=frn_cpp.__name__):
        for _ in range(3):
            out = frn(x)
    assert out.grad_fn.name() == "FRNFunctionBackward"
    warnings = [r for r in caplog.records if r.name == frn_cpp.__name__]
    assert len(warnings) == 1 and "error: no compiler here" in warnings[0].getMessage()
    assert "no compiler here" in frn_cpp.unavailable_reason()


def test_failed_build_is_remembered_per_torch_and_compiler(monkeypatch, tmp_path, caplog):
    """A compile/load error leaves a marker in the build folder: the next process (here:
    the loader reset) fails at once, without calling the compiler again."""
    compiler = (shlex.split(os.environ.get("CXX", "")) or ["c++"])[0]
    if not shutil.which(compiler) or not (shutil.which("ninja") or importlib.util.find_spec("ninja")):
        pytest.skip("no C++ compiler or no ninja")
    from torch.utils import cpp_extension

    calls = []

    def failing_load(**kwargs):
        calls.append(kwargs["build_directory"])
        raise RuntimeError("Error building extension 'frn_det_cpu'\nfrn_cpu.cpp:9: error: 'make_intrusive' no match")

    monkeypatch.delenv("FRN_DET_NO_CPP", raising=False)
    monkeypatch.setenv("FRN_DET_CACHE", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", failing_load)
    for attempt in range(2):  # two "processes"
        monkeypatch.setattr(frn_cpp, "_ops", frn_cpp._NOT_YET)
        monkeypatch.setattr(frn_cpp, "_reason", None)
        with caplog.at_level(logging.WARNING, logger=frn_cpp.__name__):
            assert frn_cpp.ops() is None
    assert len(calls) == 1
    markers = list(frn_cpp.build_directory().glob("compile_error-*.txt"))
    assert len(markers) == 1 and "'make_intrusive' no match" in markers[0].read_text()
    reason = frn_cpp.unavailable_reason()
    assert "not retried" in reason and str(markers[0]) in reason and "'make_intrusive' no match" in reason
    # another compiler (CXX) is another marker: it builds again
    monkeypatch.setattr(frn_cpp, "_ops", frn_cpp._NOT_YET)
    monkeypatch.setenv("CXX", str(tmp_path / "other-c++"))
    (tmp_path / "other-c++").write_text("#!/bin/sh\necho other 1.0\n")
    (tmp_path / "other-c++").chmod(0o755)
    assert frn_cpp.ops() is None and len(calls) == 2
    assert len(list(frn_cpp.build_directory().glob("compile_error-*.txt"))) == 2


def test_cpp_path_under_torch_compile():
    """The ops have fake (shape-only) kernels: torch.compile traces them in one graph."""
    require_cpp()
    frn = FilterResponseNorm2d(4, learnable_eps=True)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    leaves = [x] + list(frn.parameters())
    ref = frn(x)
    assert ref.grad_fn.name() == CPP_GRAD_FN
    out = torch.compile(frn, backend="aot_eager", fullgraph=True)(x)
    for got, want in zip(torch.autograd.grad(out.sum(), leaves), torch.autograd.grad(ref.sum(), leaves)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out, ref)


def test_cpp_extension_builds_where_a_compiler_and_ninja_exist():
    """The "cpp" tests skip only where the extension cannot be built: not here."""
    if os.environ.get("FRN_DET_NO_CPP", "0") not in ("", "0"):
        pytest.skip("FRN_DET_NO_CPP is set")
    compiler = (shlex.split(os.environ.get("CXX", "")) or ["c++"])[0]
    if not shutil.which(compiler) or not (shutil.which("ninja") or importlib.util.find_spec("ninja")):
        pytest.skip("no C++ compiler or no ninja")
    seconds = cpp_build_seconds()
    assert frn_cpp.ops() is not None, frn_cpp.unavailable_reason()
    assert frn_cpp.build_directory().is_dir()
    print(f"C++ extension built or loaded in {seconds:.1f} s")


def test_gradients_only_where_required(backend):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    dz = torch.randn_like(x)
    weight, bias, tau, eps_l = make_params(4, tlu=True, learn_eps=True)
    weight.requires_grad_()
    out = frn_fused(x, weight, bias, tau, EPS, eps_l, backend=backend)
    (dweight,) = torch.autograd.grad(out, [weight], dz)
    w_ref = weight.detach().clone().requires_grad_()
    (dweight_ref,) = torch.autograd.grad(ref_forward(x, w_ref, bias, tau, eps_l), [w_ref], dz)
    torch.testing.assert_close(dweight, dweight_ref, rtol=1e-10, atol=1e-12)


def test_non_contiguous_input_and_expanded_grad(backend):
    base = torch.randn(2, 6, 10, 14, dtype=torch.float64)
    x = base[:, ::2, :, ::2]  # strided view
    assert not x.is_contiguous()
    params = make_params(3, tlu=True, learn_eps=False)
    fused_fn = fused(backend)
    for fn in (fused_fn, ref_forward):
        xs = x.clone().requires_grad_()
        ps = [p.clone().requires_grad_() if p is not None else None for p in params]
        fn(xs, *ps).sum().backward()  # upstream gradient: expanded ones, stride 0
        if fn is fused_fn:
            got = [xs.grad] + [p.grad for p in ps if p is not None]
        else:
            want = [xs.grad] + [p.grad for p in ps if p is not None]
    assert_close_all(got, want, rtol=1e-10, atol_scale=1e-12)


def test_no_grad_forward_matches_and_builds_no_graph(backend):
    x = torch.randn(2, 8, 7, 7)
    params = make_params(8, tlu=True, learn_eps=True, dtype=torch.float32)
    params = [p.requires_grad_() for p in params]
    with torch.no_grad():
        out = fused(backend)(x, *params)
        ref = ref_forward(x, *params)
    assert out.grad_fn is None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_double_backward_is_refused_but_create_graph_works(backend):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    weight, bias, tau, _ = [p.requires_grad_() if p is not None else None for p in make_params(3, True, False)]
    out = frn_fused(x, weight, bias, tau, EPS, None, backend=backend)
    (dx,) = torch.autograd.grad(out.sum(), [x], create_graph=True)
    x_ref = x.detach().clone().requires_grad_()
    (dx_ref,) = torch.autograd.grad(ref_forward(x_ref, weight, bias, tau, None).sum(), [x_ref])
    torch.testing.assert_close(dx.detach(), dx_ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError):
        dx.sum().backward()


def test_gradient_of_the_gradient_wrt_upstream_gradient_is_refused(backend):
    """With an upstream gradient that requires grad, differentiating dx again raises
    (instead of silently returning zeros)."""
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    weight, bias, tau, _ = [p.requires_grad_() if p is not None else None for p in make_params(3, True, False)]
    v = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    out = frn_fused(x, weight, bias, tau, EPS, None, backend=backend)
    (dx,) = torch.autograd.grad(out, [x], grad_outputs=v, create_graph=True)
    assert dx.requires_grad
    with pytest.raises(RuntimeError, match="differentiate twice|not differentiable"):
        dx.sum().backward()


def test_tlu_gradient_split_between_y_and_tau(backend):
    """Elements clamped by TLU send their gradient to tau, the others to x/weight/bias."""
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    weight = torch.ones(2, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    tau = torch.full((2,), 0.25, dtype=torch.float64, requires_grad=True)
    out = frn_fused(x, weight, bias, tau, EPS, None, backend=backend)
    dbias, dtau = torch.autograd.grad(out.sum(), [bias, tau])
    y = x * torch.rsqrt(x.pow(2).mean((2, 3), keepdim=True) + EPS)
    above = (y > 0.25).sum((0, 2, 3)).double()
    torch.testing.assert_close(dbias, above)
    torch.testing.assert_close(dtau, 36.0 - above)
    assert (out >= 0.25).all()
