// Scaled dot-product causal attention of one sequence, grouped-query, in f32.
#pragma once

#include <cstdint>

namespace superweight {

struct AttentionShape {
  int64_t heads, kv_heads, head_dim;
};

// out[t, h] = sum_{j <= t} softmax_j(q[t, h] . k[j, h / group] / sqrt(head_dim)) v[j, h / group]
// for t in [0, tokens), with group = heads / kv_heads. Rows of q and out are heads * head_dim
// wide, rows of k and v kv_heads * head_dim. In f32 in both precisions of the forward pass.
void CausalAttention(const AttentionShape& shape, const float* q, const float* k, const float* v,
                     int64_t tokens, float* out);

namespace internal {
// softmax(row * scale) over row[0, n), in place; shared by both kernels.
void SoftmaxRow(float* row, int64_t n, float scale);
// The AVX-512 kernel (attention_avx512.cc), for CPUs that have AVX-512F and head_dim a multiple
// of 16. Returns false, doing nothing, where it does not apply.
bool CausalAttentionAvx512(const AttentionShape& shape, const float* q, const float* k,
                           const float* v, int64_t tokens, float* out);
// Tests turn the AVX-512 kernel off to compare it with the oneDNN one.
void AllowAttentionAvx512(bool allowed);
}  // namespace internal

}  // namespace superweight
