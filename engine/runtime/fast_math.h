// exp(x) for f32 in plain arithmetic, so that loops over it vectorize (libm's expf does not
// without -ffast-math). Cody-Waite range reduction and a degree-6 minimax polynomial: within
// 2 ulp of expf over the range softmax and SiLU use; clamped to [-86, 88] so that it never
// overflows and never returns a subnormal: a subnormal operand costs a microcode assist of
// ~100 cycles in whatever consumes it (it made SwiGLU 10% of a forward pass on SmolLM2).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace superweight {

inline float FastExp(float x) {
  x = x < -86.f ? -86.f : x;
  x = x > 88.f ? 88.f : x;
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693145751953125f;  // ln2 split in two for exact reduction
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// silu(g) * u, the gated MLP's activation, as transformers computes it: g * sigmoid(g) * u.
inline float SwiGluOf(float g, float u) { return g / (1.f + FastExp(-g)) * u; }

// max(x[0..n)), -inf for n = 0. GCC leaves a max reduction over floats scalar even under
// `omp simd` (a 4-cycle dependency chain per element): eight lanes by hand.
inline float MaxOf(const float* x, int64_t n) {
  typedef float Float8 __attribute__((vector_size(32)));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  Float8 lanes = {kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    Float8 v;
    std::memcpy(&v, x + i, sizeof v);
    lanes = v > lanes ? v : lanes;
  }
  float m = kNegInf;
  for (; i < n; ++i) m = std::max(m, x[i]);
  for (int l = 0; l < 8; ++l) m = std::max(m, lanes[l]);
  return m;
}

}  // namespace superweight
