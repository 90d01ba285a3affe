#include "engine/runtime/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "engine/runtime/amx_gemm.h"
#include "engine/runtime/fast_math.h"
#include "engine/runtime/matmul.h"

namespace superweight {
namespace {

std::atomic<bool> avx512_allowed{true};

bool UseAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has && avx512_allowed.load(std::memory_order_relaxed);
}

// The portable path, a block of query rows at a time. Each block is two oneDNN matmuls over all
// heads at once, of shape [KV heads, group, rows, head_dim] against K (then V) broadcast over
// the group, so the threads share every head. Block [r0, r0 + rows) attends to keys
// [0, r0 + rows) only: the masked upper triangle outside the diagonal blocks is never computed,
// and a block's scores [heads, rows, keys] stay in cache between the two matmuls.
void CausalAttentionOneDnn(const AttentionShape& shape, const float* q, const float* k,
                           const float* v, int64_t tokens, float* out) {
  constexpr int64_t kQueryBlock = 64;
  const int64_t H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim, G = H / KV, T = tokens;
  const int64_t q_stride = H * hd, kv_stride = KV * hd;
  const int64_t block = std::min(T, kQueryBlock);
  thread_local std::vector<float> scores;
  scores.resize(H * block * T);
  float* s = scores.data();
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  for (int64_t r0 = 0; r0 < T; r0 += block) {
    const int64_t rows = std::min(block, T - r0), keys = r0 + rows;
    GroupedMatmul(KV, G, rows, hd, keys, {q + r0 * q_stride, G * hd, hd, q_stride, 1},
                  {k, hd, 0, 1, kv_stride}, s, G * rows * keys, rows * keys, keys);
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < H * rows; ++row) {
      const int64_t visible = r0 + row % rows + 1;  // keys [0, t] for query t
      float* sr = s + row * keys;
      internal::SoftmaxRow(sr, visible, scale);
      std::fill(sr + visible, sr + keys, 0.f);
    }
    GroupedMatmul(KV, G, rows, keys, hd, {s, G * rows * keys, rows * keys, keys, 1},
                  {v, hd, 0, kv_stride, 1}, out + r0 * q_stride, G * hd, hd, q_stride);
  }
}

}  // namespace

// A function of its own (noinline): inside an OpenMP-outlined loop GCC does not vectorize the
// exp loop, here it does.
__attribute__((noinline)) void internal::SoftmaxRow(float* row, int64_t n, float scale) {
  const float mx = MaxOf(row, n);
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    row[j] = FastExp((row[j] - mx) * scale);
    sum += row[j];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
}

void internal::AllowAttentionAvx512(bool allowed) { avx512_allowed = allowed; }

void CausalAttention(const AttentionShape& shape, const float* q, const float* k, const float* v,
                     int64_t tokens, float* out, Precision precision) {
  if (tokens == 0) return;
  if (precision == Precision::kBF16 && internal::AmxEnabled() &&
      internal::CausalAttentionAmx(shape, q, k, v, tokens, out)) {
    return;
  }
  if (UseAvx512() && internal::CausalAttentionAvx512(shape, q, k, v, tokens, out)) return;
  CausalAttentionOneDnn(shape, q, k, v, tokens, out);
}

}  // namespace superweight
