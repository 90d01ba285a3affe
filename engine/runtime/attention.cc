#include "engine/runtime/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/formats/dequantize.h"
#include "engine/runtime/amx_gemm.h"
#include "engine/runtime/cpu.h"
#include "engine/runtime/fast_math.h"
#include "engine/runtime/matmul.h"

namespace superweight {
namespace {

// The portable path, a block of query rows at a time. Each block is two oneDNN matmuls over all
// heads at once, of shape [KV heads, group, rows, head_dim] against K (then V) broadcast over
// the group, so the threads share every head. Block [r0, r0 + rows) attends to keys
// [0, r0 + rows) only: the masked upper triangle outside the diagonal blocks is never computed,
// and a block's scores [heads, rows, keys] stay in cache between the two matmuls.
absl::Status CausalAttentionOneDnn(const AttentionShape& shape, const float* q, const float* k,
                                   const float* v, int64_t tokens, float* out,
                                   bool round_probabilities, int64_t first_query) {
  constexpr int64_t kQueryBlock = 64;
  const int64_t H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim, G = H / KV, T = tokens;
  const int64_t q_stride = H * hd, kv_stride = KV * hd;
  const int64_t block = std::min(T, kQueryBlock);
  thread_local std::vector<float> scores;
  scores.resize(H * block * T);
  float* s = scores.data();
  const float scale = shape.Scale(), cap = shape.softcap;
  for (int64_t r0 = first_query / block * block; r0 < T; r0 += block) {  // the blocks asked
    const int64_t rows = std::min(block, T - r0), keys = r0 + rows;
    absl::Status status =
        GroupedMatmul(KV, G, rows, hd, keys, {q + r0 * q_stride, G * hd, hd, q_stride, 1},
                      {k, hd, 0, 1, kv_stride}, s, G * rows * keys, rows * keys, keys);
    if (!status.ok()) return status;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < H * rows; ++row) {
      const int64_t visible = r0 + row % rows + 1;  // keys [first, t] for query t
      const int64_t first = shape.window > 0 ? std::max<int64_t>(0, visible - shape.window) : 0;
      float* sr = s + row * keys;
      std::fill(sr, sr + first, 0.f);
      if (cap > 0) {
        for (int64_t j = first; j < visible; ++j) sr[j] = cap * std::tanh(sr[j] * scale / cap);
      }
      internal::SoftmaxRow(sr + first, visible - first, cap > 0 ? 1.f : scale);
      if (round_probabilities) FloatsToBFloat16Values(sr + first, visible - first, sr + first);
      std::fill(sr + visible, sr + keys, 0.f);
    }
    status = GroupedMatmul(KV, G, rows, keys, hd, {s, G * rows * keys, rows * keys, keys, 1},
                           {v, hd, 0, kv_stride, 1}, out + r0 * q_stride, G * hd, hd, q_stride);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// x rounded to bf16 values, into a buffer of this thread's.
const float* RoundedCopy(const float* x, int64_t n, std::vector<float>* buffer) {
  buffer->resize(n);
  float* dst = buffer->data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += 4096)
    FloatsToBFloat16Values(x + i, std::min<int64_t>(4096, n - i), dst + i);
  return dst;
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

namespace internal {
namespace {

// The engine's kernels tile head_dim by `head_dim_multiple` and see every earlier key.
bool KernelServes(const AttentionShape& shape, int64_t tokens, int64_t head_dim_multiple) {
  return shape.head_dim % head_dim_multiple == 0 && shape.kv_heads > 0 &&
         shape.heads % shape.kv_heads == 0 && shape.softcap <= 0 && !shape.Windowed(tokens);
}

}  // namespace

bool CausalAttentionAvx512(const AttentionShape& shape, const float* q, const float* k,
                           const float* v, int64_t tokens, float* out, bool round_probabilities,
                           int64_t first_query) {
  if (!KernelServes(shape, tokens, 16)) return false;
  AttendWithAvx512(shape, q, k, v, tokens, out, round_probabilities, first_query);
  return true;
}

bool CausalAttentionAmx(const AttentionShape& shape, const float* q, const float* k, const float* v,
                        int64_t tokens, float* out, int64_t first_query) {
  if (!KernelServes(shape, tokens, 32)) return false;
  AttendWithTiles(shape, q, k, v, tokens, out, first_query);
  return true;
}

}  // namespace internal

absl::Status CausalAttention(const AttentionShape& shape, const float* q, const float* k,
                             const float* v, int64_t tokens, float* out, Precision precision,
                             int64_t first_query) {
  if (tokens == 0) return absl::OkStatus();
  first_query = std::clamp<int64_t>(first_query, 0, tokens - 1);
  const bool bf16 = precision == Precision::kBF16;
  if (bf16 && internal::AmxEnabled() &&
      internal::CausalAttentionAmx(shape, q, k, v, tokens, out, first_query)) {
    return absl::OkStatus();
  }
  // bf16 off the tiles: q, k and v rounded here, the probabilities by the kernel, every product
  // of two bf16 values exact in f32 as on the tiles.
  thread_local std::vector<float> q_rounded, k_rounded, v_rounded;
  if (bf16) {
    const int64_t q_size = tokens * shape.heads * shape.head_dim;
    const int64_t kv_size = tokens * shape.kv_heads * shape.head_dim;
    q = RoundedCopy(q, q_size, &q_rounded);
    k = RoundedCopy(k, kv_size, &k_rounded);
    v = RoundedCopy(v, kv_size, &v_rounded);
  }
  if (CpuAllows(Isa::kAvx512) &&
      internal::CausalAttentionAvx512(shape, q, k, v, tokens, out, /*round_probabilities=*/bf16,
                                      first_query)) {
    return absl::OkStatus();
  }
  return CausalAttentionOneDnn(shape, q, k, v, tokens, out, /*round_probabilities=*/bf16,
                               first_query);
}

}  // namespace superweight
