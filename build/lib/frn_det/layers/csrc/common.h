// Helpers shared by the C++ CPU kernels of frn-det (frn_cpu.cpp, evonorm_cpu.cpp):
// block-wise conversion of bfloat16/float16 to float for vectorised loops, per-channel
// parameter reading, deterministic per-channel sums. Everything is in an anonymous
// namespace: each source file gets its own copy.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>
#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace {


using at::Tensor;

constexpr int64_t kBlock = 256;         // elements per partial sum in the accumulation type
constexpr int64_t kMinTaskSize = 16384; // elements per parallel task, at least

int64_t grain_planes(int64_t m) { return std::max<int64_t>(1, kMinTaskSize / std::max<int64_t>(m, 1)); }

// Element conversion. bfloat16/float16 tensors are computed in float (at::opmath_type),
// a block of kBlock elements at a time: converted into a float buffer, computed there with
// the same vectorised loops as float32, and rounded once per element when stored.
inline float to_acc(c10::Half v) { return static_cast<float>(v); }
// bfloat16 -> float is a 16-bit shift; written on the bits so that the loop vectorises
inline float to_acc(c10::BFloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline void from_acc(float v, c10::Half& out) { out = static_cast<c10::Half>(v); }
// round to nearest even, NaN stays NaN: as c10::BFloat16(float)
inline void from_acc(float v, c10::BFloat16& out) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  out.x = static_cast<uint16_t>(v != v ? 0x7FC0u : rounded);
}

// Elements [k0, k0 + n) of p as acc_t: in place for float32/float64, else converted into buf.
template <typename scalar_t, typename acc_t>
const acc_t* read_block(const scalar_t* p, int64_t k0, int64_t n, acc_t* buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return p + k0;
  } else {
    int64_t k = 0;
#if defined(__F16C__)
    if constexpr (std::is_same_v<scalar_t, c10::Half>) {  // 8 at a time (F16C)
      for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(buf + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k0 + k))));
    }
#endif
    for (; k < n; ++k) buf[k] = to_acc(p[k0 + k]);
    return buf;
  }
}

// Where to compute elements [k0, k0 + n) of p: in place for float32/float64, else buf,
// which write_block then rounds into p.
template <typename scalar_t, typename acc_t>
acc_t* output_block(scalar_t* p, int64_t k0, acc_t* buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return p + k0;
  } else {
    return buf;
  }
}

template <typename scalar_t, typename acc_t>
void write_block(const acc_t* buf, int64_t n, scalar_t* p, int64_t k0) {
  if constexpr (!std::is_same_v<scalar_t, acc_t>) {
    int64_t k = 0;
#if defined(__F16C__)
    if constexpr (std::is_same_v<scalar_t, c10::Half>) {  // 8 at a time, round to nearest even
      for (; k + 8 <= n; k += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p + k0 + k),
                         _mm256_cvtps_ph(_mm256_loadu_ps(buf + k), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    for (; k < n; ++k) from_acc(buf[k], p[k0 + k]);
  }
}

// A (C,) parameter as acc_t values; empty if absent. Cheaper than converting the tensor
// with ATen ops (which matters for small maps, where the per-call cost dominates).
template <typename acc_t>
std::vector<acc_t> channel_values(const std::optional<Tensor>& p) {
  std::vector<acc_t> values;
  if (!p || !p->defined()) return values;
  values.resize(p->size(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p->scalar_type(), "frn_parameter", [&] {
    const scalar_t* data = p->const_data_ptr<scalar_t>();
    const int64_t stride = p->stride(0);
    for (size_t c = 0; c < values.size(); ++c) values[c] = static_cast<acc_t>(data[c * stride]);
  });
  return values;
}

// out[c] = sum over n of sums[(n * C + c) * width + j], added in double in a fixed order (the
// same result for any thread count): per-channel gradients from per-(n, c) partial sums.
template <typename acc_t>
void sum_over_samples(const std::vector<double>& sums, int64_t N, int64_t C, int64_t width, int64_t j, acc_t* out) {
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += sums[(n * C + c) * width + j];
    out[c] = static_cast<acc_t>(acc);
  }
}

template <typename T>
const T* data_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

}  // namespace
