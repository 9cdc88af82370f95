"""The Triton FRN(+TLU) kernels (backend "triton") against the op-by-op reference: compiled
on CUDA tensors where a GPU exists, else on CPU tensors under Triton's interpreter (the
`dev` fixture says which), in the pytest process.

triton 3.8 reads TRITON_INTERPRET (through `triton.knobs.runtime.interpret`, which looks
at the environment at each access unless the knob was assigned in Python) when
`triton.jit` wraps a function, not at launch: a JITFunction always compiles, an
InterpretedFunction always interprets. That holds for triton's own library too
(tl.zeros, tl.sum, ... are @triton.jit functions wrapped when triton is imported, which
torch may do early), and interpreted kernels cannot call compiled functions. So
frn_triton_kernels.py uses only builtins in its kernels and wraps them at the first use,
once per mode (`kernels()`): the `dev` fixture only has to set the variable for the test
(monkeypatch restores it). The interpreter runs each program in Python with numpy: tensors
are kept tiny there; on a GPU the tests add backbone- and head-sized tensors
(CUDA_SHAPES)."""
import frn_testing
import pytest
import torch
from frn_testing import (
    EPS,
    assert_low_precision_close_to_reference,
    module_against_reference,
    ref_forward,
    rel_err,
    run,
    saved_storages,
)

from frn_det.layers.frn import FilterResponseNorm2d, frn_reference
from frn_det.layers.frn import fused as fused_mod
from frn_det.layers.frn import triton_backend as frn_triton
from frn_det.layers.frn.fused import frn_fused

CUDA = torch.cuda.is_available()
# (N, C, H, W): odd sizes, 1x1 maps, N = 1
SHAPES = [(2, 8, 5, 7), (1, 6, 1, 1), (3, 4, 1, 1), (1, 5, 9, 4)]
# compiled on a GPU only: RetinaNet R50-FPN shapes at 800x1333 (stem, res2, res5, P3, P7 at
# batch 16): planes of 1 to 266,800 elements
CUDA_SHAPES = [(1, 64, 400, 667), (2, 256, 200, 334), (4, 2048, 25, 42), (2, 256, 100, 167), (16, 256, 7, 11)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def on(dev, *tensors):
    return [t.to(dev) if t is not None else None for t in tensors]


def triton_fn(x, weight, bias, tau, eps_l):
    return frn_fused(x, weight, bias, tau, EPS, eps_l, backend="triton")


def make_params(c, tlu, learn_eps, seed=0, device="cpu"):
    """float32 parameters (the kernels' working precision)."""
    return on(device, *frn_testing.make_params(c, tlu, learn_eps, dtype=torch.float32, seed=seed))


def run_float64_reference(x, params, dz):
    return run(ref_forward, x.double(), [p.double() if p is not None else None for p in params], dz.double())


def assert_close_all(got, want, rtol, atol_scale):
    """Each tensor within rtol plus an absolute tolerance scaled by the reference's magnitude."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g.to(w.dtype), w, rtol=rtol, atol=atol_scale * w.abs().max().item() + 1e-30)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tlu", [True, False])
@pytest.mark.parametrize("learn_eps", [False, True])
def test_float32_matches_float64_reference(dev, shape, tlu, learn_eps):
    g = torch.Generator().manual_seed(1)
    x, dz = on(dev, torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    params = make_params(shape[1], tlu, learn_eps, device=dev)
    out, grads = run(triton_fn, x, params, dz)
    ref_out, ref_grads = run_float64_reference(x, params, dz)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert len(grads) == 3 + tlu + learn_eps
    assert all(gr.dtype == torch.float32 for gr in grads)
    assert_close_all([out] + grads, [ref_out] + ref_grads, rtol=1e-4, atol_scale=1e-5)


def _layout(monkeypatch, layout):
    """Sizes that send the tests' small planes down a layout: "tile" (the default sizes),
    "split" (chunks of 16 elements: several per plane, the two-pass fallback under the
    interpreter, one launch on a GPU) or "split1" (one chunk per plane: one launch with the
    counters, also under the interpreter)."""
    if layout == "split":
        monkeypatch.setattr(frn_triton, "TILE_MAX", 8)
        monkeypatch.setattr(frn_triton, "CHUNK", 16)
    elif layout == "split1":
        monkeypatch.setattr(frn_triton, "TILE_MAX", 8)
        monkeypatch.setattr(frn_triton, "CHUNK", 128)


def _launches(fn):
    """fn() and the launches and layouts it took."""
    frn_triton.launch_stats.reset()
    out = fn()
    stats = frn_triton.launch_stats
    return out, stats.direct + stats.jit, dict(stats.layouts)


# (N, C, H, W): prime and odd sizes, C not a multiple of the rows a program packs
LAYOUT_SHAPES = [(2, 3, 7, 11), (3, 5, 1, 1), (1, 7, 13, 3)]


@pytest.mark.parametrize("layout", ["tile", "split", "split1"])
@pytest.mark.parametrize("shape", LAYOUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_layout_matches_float64_with_its_launch_count(dev, monkeypatch, layout, shape):
    """One launch each way where a plane fits a program (tile) or all its chunks run at
    once (one-pass split; under the interpreter only with one chunk per plane); the two-pass
    fallback takes two forward launches and two backward ones; the split backward adds one
    for the parameter gradients. Values against float64 in every case."""
    _layout(monkeypatch, layout)
    m = shape[2] * shape[3]
    g = torch.Generator().manual_seed(2)
    x, dz = on(dev, torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    params = make_params(shape[1], tlu=True, learn_eps=True, device=dev)
    leaves = [t.clone().requires_grad_() for t in [x] + params]
    out, fwd_launches, fwd_layouts = _launches(lambda: triton_fn(*leaves))
    grads, bwd_launches, bwd_layouts = _launches(lambda: torch.autograd.grad(out, leaves, dz))
    ref_out, ref_grads = run_float64_reference(x, params, dz)
    assert_close_all([out] + list(grads), [ref_out] + ref_grads, rtol=1e-4, atol_scale=1e-5)
    if layout == "tile" or m <= 8:  # 1x1 maps stay tiles whatever the sizes
        expected = {"tile": 1}, 1, 1
    elif layout == "split1" or dev.type == "cuda":
        expected = {"split one-pass": 1}, 1, 2
    else:
        expected = {"split two-pass": 1}, 2, 3
    assert (fwd_layouts, fwd_launches, bwd_launches) == expected
    assert bwd_layouts == fwd_layouts


def test_tile_packs_small_planes_and_keeps_programs_for_every_sm():
    """Configurations per shape bucket: whole planes in registers up to TILE_MAX elements,
    packed into about TILE elements per program, but not below one program per SM where
    there are that many planes; larger planes split into CHUNK-element chunks."""
    p = frn_triton.plan(64, 256)  # P7 of a 1024 px image, 256 channels, one program wanted
    assert (p.layout, p.rows, p.block, p.num_warps) == ("tile", 128, 64, 16)
    p = frn_triton.plan(64, 256, min_programs=132)  # an H100's 132 SMs: 256 programs of 1 plane
    assert (p.layout, p.rows, p.block, p.num_warps) == ("tile", 1, 64, 1)
    p = frn_triton.plan(5 * 7, 3)  # few planes: no more rows than planes
    assert (p.layout, p.rows, p.block) == ("tile", 4, 64)
    p = frn_triton.plan(100 * 167, 16 * 256, min_programs=132)  # P3 at 800x1333: split
    assert (p.layout, p.chunk, p.s, p.s_block, p.num_warps) == ("split", 4096, 5, 8, 8)
    p = frn_triton.plan(400 * 667, 64)  # the stem: 66 chunks per plane
    assert (p.layout, p.s, p.s_block) == ("split", 66, 128)
    assert frn_triton.plan(8192, 1).layout == "tile" and frn_triton.plan(8193, 1).layout == "split"


@pytest.mark.parametrize("layout", ["tile", "split"])
def test_deterministic_and_only_dx_skipped_when_not_needed(dev, monkeypatch, layout):
    """Bit-identical results on a second run (fixed-order sums, no atomics in any sum), and
    the parameter gradients alone where x needs none (NEED_DX false: one partials launch)."""
    _layout(monkeypatch, layout)
    g = torch.Generator().manual_seed(5)
    x, dz = on(dev, torch.randn(3, 5, 6, 7, generator=g), torch.randn(3, 5, 6, 7, generator=g))
    params = [p.requires_grad_() for p in make_params(5, tlu=True, learn_eps=True, device=dev)]
    xg = x.clone().requires_grad_()
    first = torch.autograd.grad(triton_fn(xg, *params), [xg] + params, dz)
    second = torch.autograd.grad(triton_fn(xg, *params), [xg] + params, dz)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    out = triton_fn(x, *params)
    param_grads, launches, _ = _launches(lambda: torch.autograd.grad(out, params, dz))
    assert all(torch.equal(a, b) for a, b in zip(param_grads, first[1:]))
    assert launches == (1 if layout == "tile" else 2)  # split: the partials, then their sums


def test_empty_batch_gives_empty_output_and_zero_parameter_gradients(dev):
    """An R-CNN mask head without ROIs: N = 0 (frn_fused answers it before any kernel)."""
    x = torch.zeros(0, 4, 5, 5, device=dev, requires_grad=True)
    params = [p.requires_grad_() for p in make_params(4, tlu=True, learn_eps=True, device=dev)]
    out = triton_fn(x, *params)
    assert out.shape == (0, 4, 5, 5)
    grads = torch.autograd.grad(out.sum(), [x] + params, allow_unused=True)
    assert grads[0].shape == x.shape
    assert all(gr is None or (gr == 0).all() for gr in grads[1:])


@pytest.mark.parametrize("layout", ["tile", "split"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_close_to_float32_reference(dev, monkeypatch, dtype, layout):
    """bf16/fp16 in and out, statistics in float32: compared with the float32 reference
    of the same (rounded) inputs, within a few units of the format's rounding."""
    _layout(monkeypatch, layout)
    shape = (2, 8, 6, 5)
    g = torch.Generator().manual_seed(3)
    x, dz = on(dev, torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype))
    params = make_params(shape[1], tlu=True, learn_eps=True, device=dev)
    assert_low_precision_close_to_reference(triton_fn, x, params, dz)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES + (CUDA_SHAPES if CUDA else []), ids=lambda s: "x".join(map(str, s)))
def test_every_dtype_forward_and_backward_against_float64_reference(dev, shape, dtype):
    """float32, bf16 and fp16 against float64 computed from the same (rounded) inputs: on a
    GPU, compiled, up to backbone-sized planes (CUDA_SHAPES)."""
    g = torch.Generator().manual_seed(4)
    x, dz = on(dev, torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype))
    params = make_params(shape[1], tlu=True, learn_eps=True, device=dev)
    out, grads = run(triton_fn, x, params, dz)
    ref_out, ref_grads = run_float64_reference(x, params, dz)
    assert out.dtype == dtype and out.device == x.device and grads[0].dtype == dtype
    assert all(gr.dtype == torch.float32 for gr in grads[1:])
    # float32: sums of up to 10^6 terms; bf16/fp16: a few units of the format's rounding
    ulp = {torch.float32: 2.0**-20, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[dtype]
    assert rel_err(out, ref_out) < 2 * ulp
    assert rel_err(grads[0], ref_grads[0]) < 4 * ulp
    for got, want in zip(grads[1:], ref_grads[1:]):  # parameter gradients: float32 sums
        assert rel_err(got, want) < max(2 * ulp, 1e-4)


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("learn_eps", [False, True])
def test_saves_only_input_and_per_sample_channel_statistic(dev, contiguous, learn_eps):
    """Saved: x (or its NCHW copy), r per (n, c) in float32, and the parameters themselves."""
    n, c = 2, 4
    x = torch.randn(n, c, 6, 5, device=dev) if contiguous else torch.randn(n, 6, 5, c, device=dev).permute(0, 3, 1, 2)
    x.requires_grad_()
    frn = FilterResponseNorm2d(c, learnable_eps=learn_eps, impl="triton").to(dev)
    params = {p.untyped_storage().data_ptr() for p in frn.parameters()}
    storages, out = saved_storages(frn, x)
    assert out.grad_fn.name() == "FRNTritonFunctionBackward"
    assert params <= set(storages)  # the parameters, not copies
    others = sorted(nbytes for ptr, nbytes in storages.items() if ptr not in params)
    assert others == sorted([n * c * 4, x.numel() * x.element_size()])  # r and x
    assert (x.untyped_storage().data_ptr() in storages) == contiguous  # else a copy
    assert out.is_contiguous()  # NCHW, also for the permuted (channels_last-like) input
    out.sum().backward()  # what was saved suffices for the backward
    x_ref = x.detach().clone().requires_grad_()
    out_ref = frn_reference(x_ref, frn.weight, frn.bias, frn.tau, frn.effective_eps())
    out_ref.sum().backward()
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def test_double_backward_is_refused_but_create_graph_works(dev):
    x = torch.randn(2, 3, 4, 4, device=dev, requires_grad=True)
    weight, bias, tau, _ = [
        p.requires_grad_() if p is not None else None for p in make_params(3, True, False, device=dev)
    ]
    out = triton_fn(x, weight, bias, tau, None)
    # the upstream gradient 2 out depends on x: the backward's output carries a graph node
    (dx,) = torch.autograd.grad(out.pow(2).sum(), [x], create_graph=True)
    x_ref = x.detach().double().requires_grad_()
    out_ref = ref_forward(x_ref, weight.double(), bias.double(), tau.double(), None)
    (dx_ref,) = torch.autograd.grad(out_ref.pow(2).sum(), [x_ref])
    torch.testing.assert_close(dx.detach().double(), dx_ref, rtol=1e-4, atol=1e-5)
    assert dx.requires_grad
    with pytest.raises(RuntimeError, match="differentiate twice"):  # once_differentiable
        dx.sum().backward()


def test_gradients_only_where_required(dev):
    """Only tau requires a gradient: the backward kernel skips dx (NEED_DX false)."""
    x = torch.randn(2, 4, 6, 6, device=dev)
    dz = torch.randn_like(x)
    weight, bias, tau, eps_l = make_params(4, tlu=True, learn_eps=True, device=dev)
    tau.requires_grad_()
    out = triton_fn(x, weight, bias, tau, eps_l)
    (dtau,) = torch.autograd.grad(out, [tau], dz)
    t_ref = tau.detach().double().requires_grad_()
    (dtau_ref,) = torch.autograd.grad(ref_forward(x.double(), weight.double(), bias.double(), t_ref,
                                                  eps_l.double()), [t_ref], dz.double())
    torch.testing.assert_close(dtau.double(), dtau_ref, rtol=1e-5, atol=1e-5)


def test_no_grad_forward_matches_and_builds_no_graph(dev):
    x = torch.randn(2, 8, 7, 7, device=dev)
    params = [p.requires_grad_() for p in make_params(8, tlu=True, learn_eps=True, device=dev)]
    with torch.no_grad():
        out = triton_fn(x, *params)
        ref = ref_forward(x, *params)
    assert out.grad_fn is None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_tie_with_tau_sends_gradient_to_tau(dev):
    """y == tau exactly (x = 0, bias = tau = 0): the gradient goes to tau, as in the
    other fused backends; elements above tau send it to bias."""
    x = torch.tensor([[-1.0, 0.0, 2.0, 0.0, 0.5, -0.25]], device=dev).view(1, 1, 2, 3).repeat(1, 2, 1, 1)
    weight = torch.ones(2, device=dev, requires_grad=True)
    bias = torch.zeros(2, device=dev, requires_grad=True)
    tau = torch.zeros(2, device=dev, requires_grad=True)
    out = triton_fn(x, weight, bias, tau, None)
    dbias, dtau = torch.autograd.grad(out.sum(), [bias, tau])
    torch.testing.assert_close(dbias, torch.full((2,), 2.0, device=dev))  # 2.0 and 0.5
    torch.testing.assert_close(dtau, torch.full((2,), 4.0, device=dev))  # -1, 0, 0, -0.25
    assert (out >= 0).all()


@pytest.mark.parametrize("tlu", [True, False])
@pytest.mark.parametrize("learnable_eps", [False, True])
def test_module_triton_equals_reference(dev, tlu, learnable_eps):
    tri, _, x, results = module_against_reference("triton", (2, 6, 5, 4), tlu, learnable_eps, device=dev)
    assert tri(x).grad_fn.name() == "FRNTritonFunctionBackward"
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for g_tri, g_ref in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(g_tri, g_ref, rtol=1e-4, atol=1e-5)


def test_dispatch(dev):
    params = [p.requires_grad_() for p in make_params(4, tlu=True, learn_eps=False, device=dev)[:3]]
    x = torch.randn(2, 4, 3, 3, device=dev)
    assert frn_fused(x, *params, EPS, None, backend="triton").grad_fn.name() == "FRNTritonFunctionBackward"
    # "auto" takes Triton for CUDA tensors only, never for CPU ones, interpreter or not
    # (asked directly: running "auto" on CPU would build the C++ extension)
    assert fused_mod._use_triton(x, "auto") == (dev.type == "cuda")
    if dev.type == "cuda":
        assert frn_fused(x, *params, EPS, None).grad_fn.name() == "FRNTritonFunctionBackward"
    with pytest.raises(ValueError, match="backend='triton'.*float64"):
        frn_fused(x.double(), *params, EPS, None, backend="triton")


def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not frn_triton.interpreting()
    x = torch.randn(2, 4, 3, 3)
    params = make_params(4, tlu=True, learn_eps=False)[:3]
    if frn_triton.available():
        with pytest.raises(ValueError, match="backend='triton'.*CUDA tensor, got device cpu"):
            frn_fused(x, *params, EPS, None, backend="triton")
    else:
        with pytest.raises(RuntimeError, match="backend='triton'.*unavailable"):
            frn_fused(x, *params, EPS, None, backend="triton")


def test_kernels_are_wrapped_once_per_interpreter_mode(monkeypatch):
    """triton.jit picks compiled or interpreted functions when it wraps (TRITON_INTERPRET
    is not read at launch): one pair per mode, so the mode can change within a process."""
    if not frn_triton.available():
        pytest.skip(f"Triton kernels unavailable: {frn_triton.unavailable_reason()}")
    from frn_det.layers.frn.triton_kernels import kernels

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    compiled = kernels()  # wrapped, not compiled: that happens at the first launch
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    interpreted = kernels()
    assert [type(k).__name__ for k in compiled] == ["JITFunction"] * 5
    assert [type(k).__name__ for k in interpreted] == ["InterpretedFunction"] * 5
    assert kernels() is interpreted
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert kernels() is compiled


def test_first_call_compilation_changes_nothing_and_is_recorded(dev, tmp_path, monkeypatch):
    """Triton compiles (or, interpreted, wraps) the kernels at their first call, with a
    launch configuration fixed by the plane size alone (no autotuning, which could pick
    another one from run to run): a fresh compilation gives bitwise the results of a warm
    one, and the run records that the Triton kernels ran."""
    import triton

    from frn_det.layers import implementations
    from frn_det.layers.frn import triton_kernels

    assert not any(isinstance(k, triton.runtime.Autotuner) for k in triton_kernels.kernels())
    sizes = (1, 35, 256, 4096, 100 * 167)
    plans = [frn_triton.plan(m, 16) for m in sizes]
    assert plans == [frn_triton.plan(m, 16) for m in sizes] and len(set(plans)) > 1  # a function of the sizes
    implementations.reset()
    try:
        x = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(3)).to(dev).requires_grad_()
        frn = FilterResponseNorm2d(8, learnable_eps=True, impl="triton").to(dev)

        def results():
            out = frn(x)
            return [out.detach()] + list(torch.autograd.grad(out.square().sum(), [x, *frn.parameters()]))

        # new kernel objects and an empty Triton cache: the next call compiles afresh
        triton_kernels._jit.cache_clear()
        monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cold"))
        first, warm = results(), results()
        triton_kernels._jit.cache_clear()
        monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cold_again"))
        again = results()
        for a, b, c in zip(first, warm, again):
            assert torch.equal(a, b) and torch.equal(a, c)
        name = implementations.TRITON if dev.type == "cuda" else implementations.TRITON_INTERPRETER
        assert implementations.used() == {"FRN": {"implementation": name, "reason": None}}
    finally:
        implementations.reset()


def test_without_triton_on_cuda_the_fallback_is_said_before_any_run(monkeypatch):
    """prepare() (the sweep and train_net call it before any worker starts) names the
    fallback on the console; the run's record then says why (the layers' note)."""
    from frn_det.layers import implementations

    monkeypatch.setenv("FRN_DET_NO_TRITON", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the CUDA branch, also on a CPU machine
    said = []
    implementations.prepare("cuda", said.append)
    assert said == ["FRN uses its PyTorch implementation on CUDA in every run: Triton disabled by FRN_DET_NO_TRITON"]
    if CUDA:
        implementations.reset()
        try:
            FilterResponseNorm2d(4)(torch.randn(1, 4, 3, 3, device="cuda"))
            assert implementations.used() == {
                "FRN": {"implementation": "PyTorch", "reason": "Triton disabled by FRN_DET_NO_TRITON"}}
        finally:
            implementations.reset()


@pytest.mark.skipif(not CUDA, reason="compiled only: the interpreter has no direct launches, no co-resident programs")
def test_direct_launches_and_one_pass_split_give_the_same_bits(monkeypatch):
    """On a GPU: the cached compiled kernels called directly, and the one-launch split (the
    counters), give the bits of `kernel[grid]` launches and of the two-pass split."""
    if not frn_triton.available():
        pytest.skip(f"Triton kernels unavailable: {frn_triton.unavailable_reason()}")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    g = torch.Generator().manual_seed(7)
    results = {}
    for shape in [(2, 64, 7, 11), (2, 64, 100, 167)]:  # a tile (P7-like) and a split plane (P3)
        x, dz = on("cuda", torch.randn(shape, generator=g), torch.randn(shape, generator=g))
        params = [p.requires_grad_() for p in make_params(shape[1], tlu=True, learn_eps=True, device="cuda")]
        for direct, one_pass in [(False, False), (True, True), (True, True), (False, True)]:
            monkeypatch.setattr(frn_triton, "DIRECT_LAUNCH", direct)
            monkeypatch.setattr(frn_triton, "ONE_PASS", one_pass)
            xg = x.clone().requires_grad_()
            frn_triton.launch_stats.reset()
            out = triton_fn(xg, *params)
            grads = torch.autograd.grad(out, [xg] + params, dz)
            stats = frn_triton.launch_stats
            results.setdefault(shape, []).append(([out, *grads], stats.direct, dict(stats.layouts)))
    for shape, runs in results.items():
        base = runs[0][0]
        for tensors, _, _ in runs[1:]:
            assert all(torch.equal(a, b) for a, b in zip(tensors, base)), shape
        assert runs[0][1] == 0 and runs[2][1] > 0  # the second direct run found its kernels cached
    assert results[(2, 64, 100, 167)][0][2] == {"split two-pass": 2}
    assert results[(2, 64, 100, 167)][1][2] == {"split one-pass": 2}


def test_direct_launch_key_separates_what_triton_specializes_on():
    """A compiled kernel is reused directly only for arguments it was compiled for: the
    key tells apart dtypes, 16-byte alignment, integers divisible by 16, equal to 1, or
    beyond 32 bits, as Triton's own specialization does."""
    spec = frn_triton._spec
    x = torch.empty(64)
    assert spec(x) == (torch.float32, True)
    assert spec(x[1:]) == (torch.float32, False)  # 4 bytes off: no 16-byte vector loads
    assert spec(x.half()) != spec(x)
    assert [spec(v) for v in (16, 17, 1, 2**31)] == [("i", False, True, True), ("i", False, False, True),
                                                     ("i", True, False, True), ("i", False, True, False)]
    assert spec(1e-6) == "float"
