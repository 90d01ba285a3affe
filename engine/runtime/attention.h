// Scaled dot-product causal attention of one sequence, grouped-query.
#pragma once

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "engine/runtime/matmul.h"

namespace superweight {

struct AttentionShape {
  int64_t heads, kv_heads, head_dim;
  float scale = 0.f;    // the scores' scale; 0 means 1/sqrt(head_dim)
  float softcap = 0.f;  // scores become softcap * tanh(score / softcap) before the softmax; 0 none
  int64_t window = 0;   // a query sees itself and the window - 1 keys before it; 0: all before it

  float Scale() const { return scale > 0 ? scale : 1.f / std::sqrt(static_cast<float>(head_dim)); }
  // Whether the window hides any key of a sequence this long.
  bool Windowed(int64_t tokens) const { return window > 0 && window < tokens; }
};

// out[t, h] = sum_{j <= t} softmax_j(q[t, h] . k[j, h / group] * scale) v[j, h / group]
// for t in [0, tokens), with group = heads / kv_heads (and the shape's soft-capping and window).
// Rows of q and out are heads * head_dim wide, rows of k and v kv_heads * head_dim. In f32; with
// bf16 precision q, k, v and the probabilities are rounded to bf16 and the products summed in f32,
// as the bf16 linear layers do, on every CPU class. Fails only where oneDNN fails (the path below
// AVX-512). Only queries [first_query, tokens) need answering (a tree's branch attends over its
// prefix's keys without answering the prefix again): out's rows before it are left as they are
// or overwritten; each row answered is the one the whole call gives, bit for bit.
absl::Status CausalAttention(const AttentionShape& shape, const float* q, const float* k,
                             const float* v, int64_t tokens, float* out,
                             Precision precision = Precision::kF32, int64_t first_query = 0);

namespace internal {
// softmax(row * scale) over row[0, n), in place; shared by both kernels.
void SoftmaxRow(float* row, int64_t n, float scale);
// The AVX-512 kernel (attention_avx512.cc), for CPUs that have AVX-512 and head_dim a multiple
// of 16, without soft-capping or a window that hides keys; round_probabilities rounds each
// probability to bf16 before it meets v. Returns false, doing nothing, where it does not apply.
bool CausalAttentionAvx512(const AttentionShape& shape, const float* q, const float* k,
                           const float* v, int64_t tokens, float* out, bool round_probabilities,
                           int64_t first_query = 0);
// The AMX kernel (attention_amx.cc), for CPUs with AMX-BF16 (internal::AmxEnabled) and
// head_dim a multiple of 32, without soft-capping or a window that hides keys. Returns false, doing
// nothing, where it does not apply.
bool CausalAttentionAmx(const AttentionShape& shape, const float* q, const float* k, const float* v,
                        int64_t tokens, float* out, int64_t first_query = 0);
// The kernels themselves, for shapes the two above accepted. Those checks are built for any CPU
// (attention.cc); any code of the kernels' files may use AVX-512, the prologue too.
void AttendWithAvx512(const AttentionShape& shape, const float* q, const float* k, const float* v,
                      int64_t tokens, float* out, bool round_probabilities, int64_t first_query);
void AttendWithTiles(const AttentionShape& shape, const float* q, const float* k, const float* v,
                     int64_t tokens, float* out, int64_t first_query);
}  // namespace internal

}  // namespace superweight
