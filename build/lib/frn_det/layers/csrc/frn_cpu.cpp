// FRN(+TLU) forward and backward CPU kernels for NCHW-contiguous float32/float64 and
// bfloat16/float16 tensors (the latter computed in float32, with float32 statistics, and
// rounded once per stored element). Parameters of any float dtype are read as the
// accumulation type.
// The math is derived in frn_det/layers/frn/fused.py; per sample n and channel c, over
// the M = H*W positions of one (n, c) plane:
//
//   forward:  r = 1 / sqrt(mean(x^2) + e),  e = eps + |eps_l[c]|,  a = w r
//             z = max(a x + b, tau)                       (without TLU: z = a x + b)
//   backward: g = dz where a x + b > tau, else 0          (g = dz without TLU)
//             Sgx = sum g x,  Sg = sum g,  Sdz = sum dz
//             dx = a g + b2 x,  b2 = -a r^2 Sgx / M
//             dweight += r Sgx,  dbias += Sg,  dtau += Sdz - Sg,  de += -w r^3 Sgx / 2
//
// The backward recomputes y = a x + b exactly as the forward did (same a from the saved r;
// built with -ffp-contract=off), so the TLU mask matches; at a tie y == tau the gradient
// goes to tau, as in frn/fused.py. Only x and r are needed besides the parameters.
//
// Each direction reads the plane twice (statistics, then elementwise); planes are split
// between threads with at::parallel_for. Plane sums are accumulated in blocks of kBlock
// elements in the accumulation type (vectorised) and the block sums are added in double; the
// per-channel sums over n are taken in double after the parallel loop, in a fixed order
// (deterministic results for any thread count).
//
// Besides the two kernels, the op frn_det::frn(x, weight, bias, tau, eps, eps_l) -> z is
// differentiable by itself: its Autograd kernel (FRNAutograd below) runs the forward and
// backward kernels from C++, so a call costs one dispatcher call instead of a Python
// autograd.Function (which is what dominates at small maps like RetinaNet's P6/P7).
// frn_det::tlu(x, tau) is TLU on its own (after residual adds), likewise differentiable.
#include "common.h"

namespace {

// x: NCHW-contiguous CPU tensor; parameters: (C,) CPU tensors of any float dtype and stride
// (read into acc_t vectors by channel_values).
void check_inputs(const Tensor& x, const Tensor& weight, const Tensor& bias, const std::optional<Tensor>& tau,
                  const std::optional<Tensor>& eps_l) {
  TORCH_CHECK(x.device().is_cpu(), "frn_det: CPU tensors expected");
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "frn_det: NCHW-contiguous 4-d input expected");
  const int64_t C = x.size(1);
  for (const Tensor* p : {&weight, &bias, tau ? &*tau : nullptr, eps_l ? &*eps_l : nullptr}) {
    if (p == nullptr) continue;
    TORCH_CHECK(p->device().is_cpu() && p->dim() == 1 && p->size(0) == C && at::isFloatingType(p->scalar_type()),
                "frn_det: parameters must be (C,) floating-point CPU tensors");
  }
}

// Effective eps per channel, in double.
template <typename acc_t>
double eps_of(double eps, const acc_t* eps_l, int64_t c) {
  return eps_l ? eps + std::abs(static_cast<double>(eps_l[c])) : eps;
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void forward_kernel(const scalar_t* xp, const acc_t* wp, const acc_t* bp, const acc_t* tp, const acc_t* ep,
                    double eps, int64_t N, int64_t C, int64_t M, scalar_t* zp, acc_t* rp) {
  // A plane of at most kBlock elements is converted once: pass 2 reuses pass 1's block.
  const bool one_block = M <= kBlock;
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], zbuf[kBlock];
    for (int64_t i = begin, c = begin % C; i < end; ++i, c = c + 1 == C ? 0 : c + 1) {
      const scalar_t* xi = xp + i * M;
      scalar_t* zi = zp + i * M;
      // pass 1: sum of squares
      double total = 0;
      const acc_t* xb = nullptr;
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        xb = read_block(xi, k0, n, xbuf);
        acc_t s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < n; ++k) s += xb[k] * xb[k];
        total += s;
      }
      const acc_t ri = static_cast<acc_t>(1.0 / std::sqrt(total / M + eps_of(eps, ep, c)));
      rp[i] = ri;
      // pass 2: z = max(a x + b, t)
      const acc_t a = wp[c] * ri, b = bp[c], t = tp ? tp[c] : acc_t(0);
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        if (!one_block) xb = read_block(xi, k0, n, xbuf);
        acc_t* zb = output_block(zi, k0, zbuf);
        if (tp) {
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) zb[k] = std::max(a * xb[k] + b, t);
        } else {
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) zb[k] = a * xb[k] + b;
        }
        write_block(zb, n, zi, k0);
      }
    }
  });
}

// sums: per (n, c) r Sgx, Sg, Sdz - Sg, -w r^3 Sgx / 2 (in double); dxp may be null
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void backward_kernel(const scalar_t* dp, const scalar_t* xp, const acc_t* rp, const acc_t* wp, const acc_t* bp,
                     const acc_t* tp, int64_t N, int64_t C, int64_t M, scalar_t* dxp, double* sp) {
  const bool one_block = M <= kBlock;  // as in the forward: pass 2 reuses pass 1's blocks
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], dbuf[kBlock], obuf[kBlock];
    for (int64_t i = begin, c = begin % C; i < end; ++i, c = c + 1 == C ? 0 : c + 1) {
      const scalar_t* xi = xp + i * M;
      const scalar_t* di = dp + i * M;
      const acc_t ri = rp[i];
      const acc_t a = wp[c] * ri, b = bp[c];  // as in the forward: the same y = a x + b
      const acc_t t = tp ? tp[c] : acc_t(0);
      double sgx = 0, sg = 0, sdz = 0;
      const acc_t *xb = nullptr, *db = nullptr;
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        xb = read_block(xi, k0, n, xbuf);
        db = read_block(di, k0, n, dbuf);
        acc_t bgx = 0, bg = 0, bdz = 0;
        if (tp) {
#pragma omp simd reduction(+ : bgx, bg, bdz)
          for (int64_t k = 0; k < n; ++k) {
            const acc_t g = a * xb[k] + b > t ? db[k] : acc_t(0);
            bgx += g * xb[k];
            bg += g;
            bdz += db[k];
          }
        } else {
#pragma omp simd reduction(+ : bgx, bg)
          for (int64_t k = 0; k < n; ++k) {
            bgx += db[k] * xb[k];
            bg += db[k];
          }
        }
        sgx += bgx;
        sg += bg;
        sdz += bdz;
      }
      const double rd = ri, wr3s = static_cast<double>(wp[c]) * rd * rd * rd * sgx;  // w r^3 Sgx
      double* s = sp + 4 * i;
      s[0] = rd * sgx;
      s[1] = sg;
      s[2] = sdz - sg;
      s[3] = -0.5 * wr3s;
      if (!dxp) continue;
      scalar_t* oi = dxp + i * M;
      const acc_t b2 = static_cast<acc_t>(-wr3s / M);
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        if (!one_block) {
          xb = read_block(xi, k0, n, xbuf);
          db = read_block(di, k0, n, dbuf);
        }
        acc_t* ob = output_block(oi, k0, obuf);
        if (tp) {
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) {
            const acc_t g = a * xb[k] + b > t ? db[k] : acc_t(0);
            ob[k] = a * g + b2 * xb[k];
          }
        } else {
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) ob[k] = a * db[k] + b2 * xb[k];
        }
        write_block(ob, n, oi, k0);
      }
    }
  });
}

// forward: returns z and r = rsqrt(nu2 + e) per (n, c), in the accumulation dtype
std::tuple<Tensor, Tensor> frn_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                       const std::optional<Tensor>& tau, double eps,
                                       const std::optional<Tensor>& eps_l) {
  check_inputs(x, weight, bias, tau, eps_l);
  const int64_t N = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  TORCH_CHECK(M > 0, "frn_det: empty H*W");
  Tensor z = at::empty_like(x);
  Tensor r = at::empty({N, C}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "frn_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto w = channel_values<acc_t>(weight), b = channel_values<acc_t>(bias), t = channel_values<acc_t>(tau),
               e = channel_values<acc_t>(eps_l);
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.data(), b.data(), data_or_null(t), data_or_null(e), eps,
                             N, C, M, z.mutable_data_ptr<scalar_t>(), r.mutable_data_ptr<acc_t>());
  });
  return {z, r};
}

// backward: returns dx (empty unless need_dx), dweight, dbias, dtau (meaningless without TLU)
// and de = dL/d(effective eps) per channel (the learned-eps gradient before sign(eps_l));
// the per-channel gradients in the accumulation dtype.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> frn_backward(const Tensor& dz, const Tensor& x, const Tensor& r,
                                                                const Tensor& weight, const Tensor& bias,
                                                                const std::optional<Tensor>& tau, bool need_dx) {
  check_inputs(x, weight, bias, tau, std::nullopt);
  TORCH_CHECK(dz.sizes() == x.sizes() && dz.is_contiguous() && dz.scalar_type() == x.scalar_type(),
              "frn_det: dz must be a contiguous tensor like x");
  const int64_t N = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  TORCH_CHECK(M > 0, "frn_det: empty H*W");
  const auto acc_type = at::toOpMathType(x.scalar_type());
  TORCH_CHECK(r.numel() == N * C && r.is_contiguous() && r.scalar_type() == acc_type, "frn_det: bad r");
  Tensor dx = need_dx ? at::empty_like(x) : at::empty({0}, x.options());
  std::vector<double> sums(N * C * 4);
  std::array<Tensor, 4> grads;  // dweight, dbias, dtau, de: separate tensors (no aliasing outputs)
  for (Tensor& g : grads) g = at::empty({C}, x.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "frn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto w = channel_values<acc_t>(weight), b = channel_values<acc_t>(bias), t = channel_values<acc_t>(tau);
    backward_kernel<scalar_t>(dz.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), r.const_data_ptr<acc_t>(),
                              w.data(), b.data(), data_or_null(t), N, C, M,
                              need_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr, sums.data());
    for (int64_t j = 0; j < 4; ++j) sum_over_samples(sums, N, C, 4, j, grads[j].mutable_data_ptr<acc_t>());
  });
  return {dx, grads[0], grads[1], grads[2], grads[3]};
}

// The kernels through the dispatcher, so that tracing (fake tensors, torch.compile) reaches
// their fake implementations (layers/cpu_ops.py) instead of the kernels above.
std::tuple<Tensor, Tensor> call_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                        const std::optional<Tensor>& tau, double eps,
                                        const std::optional<Tensor>& eps_l) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("frn_det::frn_forward", "").typed<decltype(frn_forward)>();
  return op.call(x, weight, bias, tau, eps, eps_l);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> call_backward(const Tensor& dz, const Tensor& x, const Tensor& r,
                                                                 const Tensor& weight, const Tensor& bias,
                                                                 const std::optional<Tensor>& tau, bool need_dx) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("frn_det::frn_backward", "").typed<decltype(frn_backward)>();
  return op.call(dz, x, r, weight, bias, tau, need_dx);
}

// The op without autograd (inference mode, or called below the Autograd key).
Tensor frn(const Tensor& x, const Tensor& weight, const Tensor& bias, const std::optional<Tensor>& tau, double eps,
           const std::optional<Tensor>& eps_l) {
  const Tensor xc = x.contiguous();
  return std::get<0>(frn_forward(xc, weight, bias, tau, eps, eps_l));
}

}  // namespace

namespace frn_det {  // named: grad_fn.name() is "torch::autograd::CppNode<frn_det::FRNAutograd>"

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// As Python's @once_differentiable, for a backward run with create_graph=True:
// differentiating the gradients again raises. They get an Error node as their grad_fn,
// connected to dz's graph so that it is reached (if dz does not require grad, neither do
// they, and differentiating them raises anyway).
void refuse_double_backward(variable_list& grads, const Tensor& dz) {
  if (!dz.requires_grad()) return;
  auto error = c10::make_intrusive<torch::autograd::Error>(
      "frn_det: the fused FRN/TLU backward is not differentiable (double backward); use MODEL.FRN.IMPL reference",
      torch::autograd::collect_next_edges(dz));
  for (Tensor& g : grads)
    if (g.defined()) torch::autograd::create_gradient_edge(g, error);
}

class FRNAutograd : public torch::autograd::Function<FRNAutograd> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const std::optional<Tensor>& tau, double eps, const std::optional<Tensor>& eps_l) {
    const Tensor xc = x.contiguous();
    auto [z, r] = call_forward(xc, weight, bias, tau, eps, eps_l);
    const bool has_tau = tau && tau->defined(), has_eps_l = eps_l && eps_l->defined();
    ctx->saved_data["has_tau"] = has_tau;
    ctx->saved_data["has_eps_l"] = has_eps_l;
    variable_list saved{xc, r, weight, bias};
    if (has_tau) saved.push_back(*tau);
    if (has_eps_l) saved.push_back(*eps_l);
    ctx->save_for_backward(saved);
    return z;
  }

  // One gradient per forward argument (x, weight, bias, tau, eps, eps_l); undefined where
  // not needed. needs_input_grad counts the tensor arguments that were given.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const bool has_tau = ctx->saved_data["has_tau"].toBool(), has_eps_l = ctx->saved_data["has_eps_l"].toBool();
    const Tensor &x = saved[0], &r = saved[1], &weight = saved[2], &bias = saved[3];
    const std::optional<Tensor> tau = has_tau ? std::optional<Tensor>(saved[4]) : std::nullopt;
    const Tensor eps_l = has_eps_l ? saved[has_tau ? 5 : 4] : Tensor();
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1),
               need_b = ctx->needs_input_grad(2), need_tau = has_tau && ctx->needs_input_grad(3),
               need_eps_l = has_eps_l && ctx->needs_input_grad(has_tau ? 4 : 3);
    const Tensor& dz_in = grad_outputs[0];
    const bool create_graph = at::GradMode::is_enabled();
    variable_list grads(6);
    {
      at::NoGradGuard no_grad;  // the backward itself is not differentiable
      const Tensor dz = dz_in.to(x.scalar_type()).contiguous();
      auto [dx, dweight, dbias, dtau, de] =
          call_backward(dz, x, r, weight, bias, tau, need_x);
      if (need_x) grads[0] = dx;
      if (need_w) grads[1] = dweight;
      if (need_b) grads[2] = dbias;
      if (need_tau) grads[3] = dtau;
      if (need_eps_l) grads[5] = de.mul_(eps_l.sign().to(de.scalar_type()));  // d|eps_l| = sign(eps_l)
    }
    if (create_graph) refuse_double_backward(grads, dz_in);
    return grads;
  }
};

}  // namespace frn_det

namespace {

Tensor frn_autograd(const Tensor& x, const Tensor& weight, const Tensor& bias, const std::optional<Tensor>& tau,
                    double eps, const std::optional<Tensor>& eps_l) {
  return frn_det::FRNAutograd::apply(x, weight, bias, tau, eps, eps_l);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// TLU z = max(x, tau[c]) on its own (after a residual add, where no FRN precedes it).
// torch.maximum with a broadcast tau costs several full-size passes in its backward; here
// the forward is one pass, the backward one pass (dx and the per-(n, c) sums for dtau).
// tau is first rounded to x's dtype, as TLU.forward does for torch.maximum. Saved for the
// backward: the output z alone (z > tau exactly where x > tau), so the pre-activation x
// can be freed. At a tie x == tau the gradient goes to tau, as in the FRN kernels.
namespace {

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
acc_t rounded_tau(const std::vector<acc_t>& tau, int64_t c) {
  return static_cast<acc_t>(static_cast<scalar_t>(tau[c]));
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void tlu_forward_kernel(const scalar_t* xp, const std::vector<acc_t>& tau, int64_t N, int64_t C, int64_t M,
                        scalar_t* zp) {
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], zbuf[kBlock];
    for (int64_t i = begin, c = begin % C; i < end; ++i, c = c + 1 == C ? 0 : c + 1) {
      const acc_t tc = rounded_tau<scalar_t>(tau, c);
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        const acc_t* xb = read_block(xp + i * M, k0, n, xbuf);
        acc_t* zb = output_block(zp + i * M, k0, zbuf);
#pragma omp simd
        for (int64_t k = 0; k < n; ++k) zb[k] = std::max(xb[k], tc);
        write_block(zb, n, zp + i * M, k0);
      }
    }
  });
}

// sums: per (n, c), the sum of dz where z == tau (the clamped elements); dxp may be null
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void tlu_backward_kernel(const scalar_t* dp, const scalar_t* zp, const std::vector<acc_t>& tau, int64_t N,
                         int64_t C, int64_t M, scalar_t* dxp, double* sums) {
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t zbuf[kBlock], dbuf[kBlock], obuf[kBlock];
    for (int64_t i = begin, c = begin % C; i < end; ++i, c = c + 1 == C ? 0 : c + 1) {
      const acc_t tc = rounded_tau<scalar_t>(tau, c);
      double clamped = 0;
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        const acc_t* zb = read_block(zp + i * M, k0, n, zbuf);
        const acc_t* db = read_block(dp + i * M, k0, n, dbuf);
        acc_t s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < n; ++k) s += zb[k] > tc ? acc_t(0) : db[k];
        clamped += s;
        if (dxp) {
          acc_t* ob = output_block(dxp + i * M, k0, obuf);
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) ob[k] = zb[k] > tc ? db[k] : acc_t(0);
          write_block(ob, n, dxp + i * M, k0);
        }
      }
      sums[i] = clamped;
    }
  });
}

Tensor tlu(const Tensor& x_in, const Tensor& tau) {
  const Tensor x = x_in.contiguous();
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, "frn_det::tlu: 4-d CPU input expected");
  TORCH_CHECK(tau.device().is_cpu() && tau.dim() == 1 && tau.size(0) == x.size(1) &&
                  at::isFloatingType(tau.scalar_type()),
              "frn_det::tlu: tau must be a (C,) floating-point CPU tensor");
  const int64_t N = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  Tensor z = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "frn_det_tlu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    tlu_forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), channel_values<acc_t>(tau), N, C, M,
                                 z.mutable_data_ptr<scalar_t>());
  });
  return z;
}

// returns dx (empty unless need_dx) and dtau (in the accumulation dtype)
std::tuple<Tensor, Tensor> tlu_backward(const Tensor& dz, const Tensor& z, const Tensor& tau, bool need_dx) {
  TORCH_CHECK(z.device().is_cpu() && z.dim() == 4 && z.is_contiguous(), "frn_det::tlu_backward: bad z");
  TORCH_CHECK(dz.sizes() == z.sizes() && dz.is_contiguous() && dz.scalar_type() == z.scalar_type(),
              "frn_det::tlu_backward: dz must be a contiguous tensor like z");
  const int64_t N = z.size(0), C = z.size(1), M = z.size(2) * z.size(3);
  Tensor dx = need_dx ? at::empty_like(z) : at::empty({0}, z.options());
  Tensor dtau = at::empty({C}, z.options().dtype(at::toOpMathType(z.scalar_type())));
  std::vector<double> sums(N * C);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "frn_det_tlu_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    tlu_backward_kernel<scalar_t>(dz.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(),
                                  channel_values<acc_t>(tau), N, C, M,
                                  need_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr, sums.data());
    sum_over_samples(sums, N, C, 1, 0, dtau.mutable_data_ptr<acc_t>());
  });
  return {dx, dtau};
}

std::tuple<Tensor, Tensor> call_tlu_backward(const Tensor& dz, const Tensor& z, const Tensor& tau, bool need_dx) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("frn_det::tlu_backward", "").typed<decltype(tlu_backward)>();
  return op.call(dz, z, tau, need_dx);
}

Tensor call_tlu(const Tensor& x, const Tensor& tau) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("frn_det::tlu", "").typed<decltype(tlu)>();
  return op.call(x, tau);
}

}  // namespace

namespace frn_det {

class TLUAutograd : public torch::autograd::Function<TLUAutograd> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& tau) {
    Tensor z;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;  // the same op again, without its autograd
      z = call_tlu(x, tau);
    }
    ctx->save_for_backward({z, tau});
    return z;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &z = saved[0], &tau = saved[1];
    const Tensor& dz_in = grad_outputs[0];
    const bool create_graph = at::GradMode::is_enabled();
    variable_list grads(2);
    {
      at::NoGradGuard no_grad;
      auto [dx, dtau] = call_tlu_backward(dz_in.to(z.scalar_type()).contiguous(), z, tau, ctx->needs_input_grad(0));
      if (ctx->needs_input_grad(0)) grads[0] = dx;
      if (ctx->needs_input_grad(1)) grads[1] = dtau;
    }
    if (create_graph) refuse_double_backward(grads, dz_in);
    return grads;
  }
};

}  // namespace frn_det

namespace {

Tensor tlu_autograd(const Tensor& x, const Tensor& tau) { return frn_det::TLUAutograd::apply(x, tau); }

}  // namespace


TORCH_LIBRARY(frn_det, m) {
  m.def("frn(Tensor x, Tensor weight, Tensor bias, Tensor? tau, float eps, Tensor? eps_l) -> Tensor");
  m.def("frn_forward(Tensor x, Tensor weight, Tensor bias, Tensor? tau, float eps, Tensor? eps_l) -> (Tensor, Tensor)");
  m.def("frn_backward(Tensor dz, Tensor x, Tensor r, Tensor weight, Tensor bias, Tensor? tau, bool need_dx)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("tlu(Tensor x, Tensor tau) -> Tensor");
  m.def("tlu_backward(Tensor dz, Tensor z, Tensor tau, bool need_dx) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(frn_det, CPU, m) {
  m.impl("frn", &frn);
  m.impl("frn_forward", &frn_forward);
  m.impl("frn_backward", &frn_backward);
  m.impl("tlu", &tlu);
  m.impl("tlu_backward", &tlu_backward);
}

TORCH_LIBRARY_IMPL(frn_det, Autograd, m) {
  m.impl("frn", &frn_autograd);
  m.impl("tlu", &tlu_autograd);
}
