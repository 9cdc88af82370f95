// EvoNorm-S0 and EvoNorm-B0 (Liu et al. 2020, arXiv 2004.02967) forward and backward CPU
// kernels for NCHW-contiguous float32/float64 and bfloat16/float16 tensors (the latter
// computed in float32, statistics in float32 or better, rounded once per stored element).
// Used by frn_det/layers/norms/evonorm.py, whose docstring derives the gradients; the
// formulas (per sample n, channel c, position i of the M = H*W positions of a plane):
//
//   S0, group g of Cg = C/G channels (K = Cg*M elements, one contiguous range in NCHW):
//     s = 1/sqrt(var_g + eps),  u = sigmoid(v x),  z = w x u s + b
//   backward, with A = sum dz x u and B = sum dz x^2 u (1-u) per (n, c), P = sum_{c in g} w A:
//     dx = w s dz u (1 + v x (1-u)) - P s^3 (x - mean_g) / K
//     dweight += s A,  dbias += sum dz,  dv += w s B
//
//   B0: left = sqrt(var_c + eps) (var_c over N, H, W in training, running_var in eval),
//       right = v x + sqrt(ivar_nc + eps),  den = max(left, right) (left at a tie),
//       z = w x / den + b
//   backward, with g = w dz and q = -g x / den^2:
//     dx = g / den + [den = right] q v + QA_c (x - mean_c) / (left N M)
//          + QB_nc (x - imean_nc) / (istd_nc M)
//     QA_c = sum over (n, i) where den = left of q (training only), QB_nc = sum where den = right of q
//     dweight += sum dz x / den,  dbias += sum dz,  dv += sum where den = right of q x
//
// Means and variances come from sums of x - shift (shift: the first element of the group
// for S0, of channel c's first plane for B0), block sums in the accumulation type added in
// double, which keeps E[(x-shift)^2] - E[x-shift]^2 accurate when |mean| >> std.
// Backward passes recompute u and den with the same expressions as the forward (built with
// -ffp-contract=off), so the branch taken in B0's max is the forward's. Work is split
// between threads by group (S0) or plane (B0); per-channel sums over n are added in double
// in a fixed order after the parallel loops (results independent of the thread count).
#include "common.h"

namespace {

// exp(x) for the sigmoid, in a form the compiler vectorises (Cephes' expf: x = n ln2 + r,
// |r| <= ln2/2, a degree-7 polynomial for e^r, 2^n from the exponent bits): within 2 ulp of
// std::exp over [-87.3, 88.7], clamped outside (there sigmoid is 0 or 1 in float anyway).
inline float exp_vec(float x) {  // vectorised with -fno-trapping-math (cpu_ops.py)
  x = std::min(std::max(x, -87.3f), 88.7f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_vec(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T t) {
  return T(1) / (T(1) + exp_vec(-t));
}

// x: NCHW-contiguous CPU tensor; parameters: (C,) floating-point CPU tensors.
void check_evonorm(const char* op, const Tensor& x, std::initializer_list<const Tensor*> params) {
  TORCH_CHECK(x.device().is_cpu(), op, ": CPU tensors expected");
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), op, ": NCHW-contiguous 4-d input expected");
  TORCH_CHECK(x.size(2) * x.size(3) > 0, op, ": empty H*W");
  for (const Tensor* p : params) {
    TORCH_CHECK(p->device().is_cpu() && p->dim() == 1 && p->size(0) == x.size(1) &&
                    at::isFloatingType(p->scalar_type()),
                op, ": parameters must be (C,) floating-point CPU tensors");
  }
}

void check_like(const char* op, const Tensor& dz, const Tensor& x) {
  TORCH_CHECK(dz.sizes() == x.sizes() && dz.is_contiguous() && dz.scalar_type() == x.scalar_type(), op,
              ": dz must be a contiguous tensor like x");
}

void check_stat(const char* op, const Tensor& t, int64_t numel, at::ScalarType acc) {
  TORCH_CHECK(t.numel() == numel && t.is_contiguous() && t.scalar_type() == acc, op, ": bad statistics tensor");
}

// Shifted sums of elements [0, K) of p: (sum (x - shift), sum (x - shift)^2), in double.
template <typename scalar_t, typename acc_t>
std::pair<double, double> shifted_sums(const scalar_t* p, int64_t K, acc_t shift, acc_t* buf) {
  double s1 = 0, s2 = 0;
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    const int64_t n = std::min(kBlock, K - k0);
    const acc_t* xb = read_block(p, k0, n, buf);
    acc_t b1 = 0, b2 = 0;
#pragma omp simd reduction(+ : b1, b2)
    for (int64_t k = 0; k < n; ++k) {
      const acc_t d = xb[k] - shift;
      b1 += d;
      b2 += d * d;
    }
    s1 += b1;
    s2 += b2;
  }
  return {s1, s2};
}

// ------------------------------------------------------------------------------------
// EvoNorm-S0

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void s0_forward_kernel(const scalar_t* xp, const acc_t* wp, const acc_t* bp, const acc_t* vp, double eps, int64_t N,
                       int64_t C, int64_t G, int64_t M, scalar_t* zp, acc_t* mean_out, acc_t* rstd_out) {
  const int64_t Cg = C / G, K = Cg * M;
  at::parallel_for(0, N * G, grain_planes(K), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], zbuf[kBlock];
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t c0 = (ng % G) * Cg;
      const scalar_t* xg = xp + ng * K;  // the group's Cg planes are contiguous
      scalar_t* zg = zp + ng * K;
      const acc_t shift = read_block(xg, 0, 1, xbuf)[0];
      const auto [s1, s2] = shifted_sums(xg, K, shift, xbuf);
      const double md = s1 / K, var = std::max(s2 / K - md * md, 0.0);
      const acc_t s = static_cast<acc_t>(1.0 / std::sqrt(var + eps));
      mean_out[ng] = static_cast<acc_t>(static_cast<double>(shift) + md);
      rstd_out[ng] = s;
      for (int64_t cc = 0; cc < Cg; ++cc) {
        const int64_t c = c0 + cc;
        const acc_t a = wp[c] * s, b = bp[c], v = vp[c];
        const scalar_t* xi = xg + cc * M;
        scalar_t* zi = zg + cc * M;
        for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
          const int64_t n = std::min(kBlock, M - k0);
          const acc_t* xb = read_block(xi, k0, n, xbuf);
          acc_t* zb = output_block(zi, k0, zbuf);
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) zb[k] = a * xb[k] * sigmoid(v * xb[k]) + b;
          write_block(zb, n, zi, k0);
        }
      }
    }
  });
}

// sums: per (n, c) s A, s B, sum dz (in double); dxp may be null
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void s0_backward_kernel(const scalar_t* dp, const scalar_t* xp, const acc_t* mp, const acc_t* rp, const acc_t* wp,
                        const acc_t* vp, int64_t N, int64_t C, int64_t G, int64_t M, scalar_t* dxp, double* sums) {
  const int64_t Cg = C / G, K = Cg * M;
  at::parallel_for(0, N * G, grain_planes(K), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], dbuf[kBlock], obuf[kBlock];
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n_ = ng / G, c0 = (ng % G) * Cg;
      const acc_t s = rp[ng], mu = mp[ng];
      double P = 0;
      for (int64_t cc = 0; cc < Cg; ++cc) {
        const int64_t c = c0 + cc;
        const acc_t v = vp[c];
        const scalar_t* xi = xp + ng * K + cc * M;
        const scalar_t* di = dp + ng * K + cc * M;
        double A = 0, B = 0, D = 0;
        for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
          const int64_t n = std::min(kBlock, M - k0);
          const acc_t* xb = read_block(xi, k0, n, xbuf);
          const acc_t* db = read_block(di, k0, n, dbuf);
          acc_t ba = 0, bb = 0, bd = 0;
#pragma omp simd reduction(+ : ba, bb, bd)
          for (int64_t k = 0; k < n; ++k) {
            const acc_t u = sigmoid(v * xb[k]);
            const acc_t dxu = db[k] * xb[k] * u;
            ba += dxu;
            bb += dxu * xb[k] * (acc_t(1) - u);
            bd += db[k];
          }
          A += ba;
          B += bb;
          D += bd;
        }
        double* out = sums + 3 * (n_ * C + c);
        out[0] = static_cast<double>(s) * A;
        out[1] = static_cast<double>(s) * B;
        out[2] = D;
        P += static_cast<double>(wp[c]) * A;
      }
      if (!dxp) continue;
      const double sd = s;
      const acc_t coef = static_cast<acc_t>(-P * sd * sd * sd / K);
      for (int64_t cc = 0; cc < Cg; ++cc) {
        const int64_t c = c0 + cc;
        const acc_t ws = wp[c] * s, v = vp[c];
        const scalar_t* xi = xp + ng * K + cc * M;
        const scalar_t* di = dp + ng * K + cc * M;
        scalar_t* oi = dxp + ng * K + cc * M;
        for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
          const int64_t n = std::min(kBlock, M - k0);
          const acc_t* xb = read_block(xi, k0, n, xbuf);
          const acc_t* db = read_block(di, k0, n, dbuf);
          acc_t* ob = output_block(oi, k0, obuf);
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) {
            const acc_t u = sigmoid(v * xb[k]);
            ob[k] = ws * db[k] * u * (acc_t(1) + v * xb[k] * (acc_t(1) - u)) + coef * (xb[k] - mu);
          }
          write_block(ob, n, oi, k0);
        }
      }
    }
  });
}

// returns z, and per (n, group) the mean and 1/sqrt(var + eps) in the accumulation dtype
std::tuple<Tensor, Tensor, Tensor> evonorm_s0_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                                      const Tensor& v, int64_t groups, double eps) {
  check_evonorm("frn_det::evonorm_s0_forward", x, {&weight, &bias, &v});
  const int64_t N = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  TORCH_CHECK(groups > 0 && C % groups == 0, "frn_det::evonorm_s0_forward: C=", C, " not divisible by groups=", groups);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  Tensor z = at::empty_like(x);
  Tensor mean = at::empty({N, groups}, x.options().dtype(acc_type));
  Tensor rstd = at::empty({N, groups}, x.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "evonorm_s0_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto w = channel_values<acc_t>(weight), b = channel_values<acc_t>(bias), vv = channel_values<acc_t>(v);
    s0_forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.data(), b.data(), vv.data(), eps, N, C, groups, M,
                                z.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<acc_t>(),
                                rstd.mutable_data_ptr<acc_t>());
  });
  return {z, mean, rstd};
}

// returns dx (empty unless need_dx), dweight, dbias, dv (in the accumulation dtype)
std::tuple<Tensor, Tensor, Tensor, Tensor> evonorm_s0_backward(const Tensor& dz, const Tensor& x, const Tensor& mean,
                                                               const Tensor& rstd, const Tensor& weight,
                                                               const Tensor& v, int64_t groups, bool need_dx) {
  const char* op = "frn_det::evonorm_s0_backward";
  check_evonorm(op, x, {&weight, &v});
  check_like(op, dz, x);
  const int64_t N = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  TORCH_CHECK(groups > 0 && C % groups == 0, op, ": C not divisible by groups");
  const auto acc_type = at::toOpMathType(x.scalar_type());
  check_stat(op, mean, N * groups, acc_type);
  check_stat(op, rstd, N * groups, acc_type);
  Tensor dx = need_dx ? at::empty_like(x) : at::empty({0}, x.options());
  std::vector<double> sums(N * C * 3);
  std::array<Tensor, 3> grads;  // dweight, dbias, dv
  for (Tensor& g : grads) g = at::empty({C}, x.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "evonorm_s0_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto w = channel_values<acc_t>(weight), vv = channel_values<acc_t>(v);
    s0_backward_kernel<scalar_t>(dz.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                 mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(), w.data(), vv.data(), N,
                                 C, groups, M, need_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr, sums.data());
    sum_over_samples(sums, N, C, 3, 0, grads[0].mutable_data_ptr<acc_t>());
    sum_over_samples(sums, N, C, 3, 2, grads[1].mutable_data_ptr<acc_t>());
    acc_t* dv = grads[2].mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += sums[(n * C + c) * 3 + 1];
      dv[c] = static_cast<acc_t>(static_cast<double>(w[c]) * acc);
    }
  });
  return {dx, grads[0], grads[1], grads[2]};
}

// ------------------------------------------------------------------------------------
// EvoNorm-B0

template <typename acc_t>
inline acc_t b0_den(acc_t left, acc_t right) {
  return left >= right ? left : right;
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void b0_forward_kernel(const scalar_t* xp, const acc_t* wp, const acc_t* bp, const acc_t* vp, const acc_t* rvp,
                       double eps, int64_t N, int64_t C, int64_t M, scalar_t* zp, acc_t* left_out, acc_t* bmean_out,
                       acc_t* bvar_out, acc_t* imean_out, acc_t* istd_out) {
  std::vector<double> s1(N * C), s2(N * C);
  std::vector<acc_t> shift(C);
  {
    acc_t buf[1];
    for (int64_t c = 0; c < C; ++c) shift[c] = read_block(xp + c * M, 0, 1, buf)[0];
  }
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock];
    for (int64_t i = begin; i < end; ++i) {
      const auto [a, b] = shifted_sums(xp + i * M, M, shift[i % C], xbuf);
      s1[i] = a;
      s2[i] = b;
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double t1 = 0, t2 = 0;
    for (int64_t n = 0; n < N; ++n) {
      t1 += s1[n * C + c];
      t2 += s2[n * C + c];
    }
    const double md = t1 / (N * M), var = std::max(t2 / (N * M) - md * md, 0.0);
    bmean_out[c] = static_cast<acc_t>(static_cast<double>(shift[c]) + md);
    bvar_out[c] = static_cast<acc_t>(var);
    left_out[c] = static_cast<acc_t>(std::sqrt((rvp ? static_cast<double>(rvp[c]) : var) + eps));
  }
  for (int64_t i = 0; i < N * C; ++i) {
    const double md = s1[i] / M, var = std::max(s2[i] / M - md * md, 0.0);
    imean_out[i] = static_cast<acc_t>(static_cast<double>(shift[i % C]) + md);
    istd_out[i] = static_cast<acc_t>(std::sqrt(var + eps));
  }
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], zbuf[kBlock];
    for (int64_t i = begin, c = begin % C; i < end; ++i, c = c + 1 == C ? 0 : c + 1) {
      const acc_t left = left_out[c], is = istd_out[i], w = wp[c], b = bp[c], v = vp[c];
      const scalar_t* xi = xp + i * M;
      scalar_t* zi = zp + i * M;
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        const acc_t* xb = read_block(xi, k0, n, xbuf);
        acc_t* zb = output_block(zi, k0, zbuf);
#pragma omp simd
        for (int64_t k = 0; k < n; ++k) zb[k] = w * xb[k] / b0_den(left, v * xb[k] + is) + b;
        write_block(zb, n, zi, k0);
      }
    }
  });
}

// per plane sums: QA, QB, QBx, sum dz x / den, sum dz
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void b0_backward_kernel(const scalar_t* dp, const scalar_t* xp, const acc_t* wp, const acc_t* vp, const acc_t* leftp,
                        const acc_t* bmp, const acc_t* imp, const acc_t* isp, bool batch_stats, int64_t N, int64_t C,
                        int64_t M, scalar_t* dxp, double* sums) {
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], dbuf[kBlock];
    for (int64_t i = begin, c = begin % C; i < end; ++i, c = c + 1 == C ? 0 : c + 1) {
      const acc_t left = leftp[c], is = isp[i], w = wp[c], v = vp[c];
      double qa = 0, qb = 0, qbx = 0, dy = 0, dzs = 0;
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        const acc_t* xb = read_block(xp + i * M, k0, n, xbuf);
        const acc_t* db = read_block(dp + i * M, k0, n, dbuf);
        acc_t ba = 0, bb = 0, bbx = 0, by = 0, bd = 0;
#pragma omp simd reduction(+ : ba, bb, bbx, by, bd)
        for (int64_t k = 0; k < n; ++k) {
          const acc_t right = v * xb[k] + is;
          const bool use_left = left >= right;
          const acc_t den = use_left ? left : right;
          const acc_t y = xb[k] / den;
          const acc_t q = -w * db[k] * y / den;
          ba += use_left ? q : acc_t(0);
          bb += use_left ? acc_t(0) : q;
          bbx += use_left ? acc_t(0) : q * xb[k];
          by += db[k] * y;
          bd += db[k];
        }
        qa += ba;
        qb += bb;
        qbx += bbx;
        dy += by;
        dzs += bd;
      }
      double* out = sums + 5 * i;
      out[0] = qa;
      out[1] = qb;
      out[2] = qbx;
      out[3] = dy;
      out[4] = dzs;
    }
  });
  if (!dxp) return;
  std::vector<acc_t> ca(C, acc_t(0));
  if (batch_stats) {
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += sums[5 * (n * C + c)];
      ca[c] = static_cast<acc_t>(acc / (static_cast<double>(leftp[c]) * N * M));
    }
  }
  at::parallel_for(0, N * C, grain_planes(M), [&](int64_t begin, int64_t end) {
    acc_t xbuf[kBlock], dbuf[kBlock], obuf[kBlock];
    for (int64_t i = begin, c = begin % C; i < end; ++i, c = c + 1 == C ? 0 : c + 1) {
      const acc_t left = leftp[c], is = isp[i], w = wp[c], v = vp[c], bm = bmp[c], im = imp[i], a = ca[c];
      const acc_t cb = static_cast<acc_t>(sums[5 * i + 1] / (static_cast<double>(is) * M));
      const scalar_t* xi = xp + i * M;
      const scalar_t* di = dp + i * M;
      scalar_t* oi = dxp + i * M;
      for (int64_t k0 = 0; k0 < M; k0 += kBlock) {
        const int64_t n = std::min(kBlock, M - k0);
        const acc_t* xb = read_block(xi, k0, n, xbuf);
        const acc_t* db = read_block(di, k0, n, dbuf);
        acc_t* ob = output_block(oi, k0, obuf);
#pragma omp simd
        for (int64_t k = 0; k < n; ++k) {
          const acc_t right = v * xb[k] + is;
          const bool use_left = left >= right;
          const acc_t den = use_left ? left : right;
          const acc_t g = w * db[k];
          const acc_t direct = use_left ? g / den : g * is / (den * den);  // g/den + q v where den = right
          ob[k] = direct + a * (xb[k] - bm) + cb * (xb[k] - im);
        }
        write_block(ob, n, oi, k0);
      }
    }
  });
}

// returns z; per channel left = sqrt(var + eps), the batch mean and (biased) variance; per
// (n, c) the instance mean and sqrt(ivar + eps). With running_var (eval) left comes from it.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> evonorm_b0_forward(const Tensor& x, const Tensor& weight,
                                                                              const Tensor& bias, const Tensor& v,
                                                                              const std::optional<Tensor>& running_var,
                                                                              double eps) {
  const char* op = "frn_det::evonorm_b0_forward";
  check_evonorm(op, x, {&weight, &bias, &v});
  if (running_var) check_evonorm(op, x, {&*running_var});
  const int64_t N = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  TORCH_CHECK(N > 0, op, ": empty batch");
  const auto opts = x.options().dtype(at::toOpMathType(x.scalar_type()));
  Tensor z = at::empty_like(x);
  Tensor left = at::empty({C}, opts), bmean = at::empty({C}, opts), bvar = at::empty({C}, opts);
  Tensor imean = at::empty({N, C}, opts), istd = at::empty({N, C}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "evonorm_b0_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto w = channel_values<acc_t>(weight), b = channel_values<acc_t>(bias), vv = channel_values<acc_t>(v),
               rv = channel_values<acc_t>(running_var);
    b0_forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.data(), b.data(), vv.data(), data_or_null(rv), eps, N,
                                C, M, z.mutable_data_ptr<scalar_t>(), left.mutable_data_ptr<acc_t>(),
                                bmean.mutable_data_ptr<acc_t>(), bvar.mutable_data_ptr<acc_t>(),
                                imean.mutable_data_ptr<acc_t>(), istd.mutable_data_ptr<acc_t>());
  });
  return {z, left, bmean, bvar, imean, istd};
}

// returns dx (empty unless need_dx), dweight, dbias, dv (in the accumulation dtype);
// batch_stats: whether left came from the batch variance (training), which x then reaches
std::tuple<Tensor, Tensor, Tensor, Tensor> evonorm_b0_backward(const Tensor& dz, const Tensor& x, const Tensor& weight,
                                                               const Tensor& v, const Tensor& left,
                                                               const Tensor& bmean, const Tensor& imean,
                                                               const Tensor& istd, bool batch_stats, bool need_dx) {
  const char* op = "frn_det::evonorm_b0_backward";
  check_evonorm(op, x, {&weight, &v});
  check_like(op, dz, x);
  const int64_t N = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  check_stat(op, left, C, acc_type);
  check_stat(op, bmean, C, acc_type);
  check_stat(op, imean, N * C, acc_type);
  check_stat(op, istd, N * C, acc_type);
  Tensor dx = need_dx ? at::empty_like(x) : at::empty({0}, x.options());
  std::vector<double> sums(N * C * 5);
  std::array<Tensor, 3> grads;  // dweight, dbias, dv
  for (Tensor& g : grads) g = at::empty({C}, x.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "evonorm_b0_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto w = channel_values<acc_t>(weight), vv = channel_values<acc_t>(v);
    b0_backward_kernel<scalar_t>(dz.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), w.data(), vv.data(),
                                 left.const_data_ptr<acc_t>(), bmean.const_data_ptr<acc_t>(),
                                 imean.const_data_ptr<acc_t>(), istd.const_data_ptr<acc_t>(), batch_stats, N, C, M,
                                 need_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr, sums.data());
    sum_over_samples(sums, N, C, 5, 3, grads[0].mutable_data_ptr<acc_t>());
    sum_over_samples(sums, N, C, 5, 4, grads[1].mutable_data_ptr<acc_t>());
    sum_over_samples(sums, N, C, 5, 2, grads[2].mutable_data_ptr<acc_t>());
  });
  return {dx, grads[0], grads[1], grads[2]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(frn_det, m) {
  m.def("evonorm_s0_forward(Tensor x, Tensor weight, Tensor bias, Tensor v, int groups, float eps)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("evonorm_s0_backward(Tensor dz, Tensor x, Tensor mean, Tensor rstd, Tensor weight, Tensor v, int groups,"
        " bool need_dx) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("evonorm_b0_forward(Tensor x, Tensor weight, Tensor bias, Tensor v, Tensor? running_var, float eps)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("evonorm_b0_backward(Tensor dz, Tensor x, Tensor weight, Tensor v, Tensor left, Tensor bmean,"
        " Tensor imean, Tensor istd, bool batch_stats, bool need_dx) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(frn_det, CPU, m) {
  m.impl("evonorm_s0_forward", &evonorm_s0_forward);
  m.impl("evonorm_s0_backward", &evonorm_s0_backward);
  m.impl("evonorm_b0_forward", &evonorm_b0_forward);
  m.impl("evonorm_b0_backward", &evonorm_b0_backward);
}
