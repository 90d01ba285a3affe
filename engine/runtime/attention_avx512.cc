// Causal attention with AVX-512 register tiles. Built with -mavx512f; attention.cc calls it
// only where the CPU reports the feature.
//
// Per query head and block of 64 query rows (one work item, the threads taking the costliest
// first): scores S = Q K^T for the keys the block can see, softmax per row, then O = P V. K is
// transposed once per call into [kv head][dim][token] so that both products are register tiles
// of up to 6 rows x 64 columns, 24 accumulators, that read 16 consecutive floats per load and
// broadcast the other operand: the same arithmetic as a matmul, without oneDNN's per-call
// packing, which costs as much as the work on these small shapes (K = head_dim for S, N =
// head_dim for O). Only the keys a row group can see are computed, rounded up to 16.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source, which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/formats/dequantize.h"
#include "engine/runtime/attention.h"
#include "engine/runtime/softmax_avx512.h"

namespace superweight {
namespace internal {
namespace {

constexpr int kMaxRows = 6;     // query rows per register tile
constexpr int kMaxVectors = 4;  // 16-float vectors per register tile row
constexpr int64_t kBlock = 64;  // query rows per work item

// A register tile: c[r, 0:16V] = row_scale[r] (1 if null) * sum_{p < depth} a[r, p] * b[p, 0:16V]
// for r in [0, R), a broadcast, b read 16 floats at a time. QK^T takes a = queries, b = K^T
// (depth: the head's dimensions); PV takes a = probabilities, b = V (depth: the keys).
template <int R, int V>
void Tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth,
          const float* row_scale, float* c, int64_t ldc) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < depth; ++p) {
    __m512 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(b + p * ldb + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + p]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512 scale = _mm512_set1_ps(row_scale == nullptr ? 1.f : row_scale[r]);
    for (int v = 0; v < V; ++v) {
      _mm512_storeu_ps(c + r * ldc + 16 * v, _mm512_mul_ps(acc[r][v], scale));
    }
  }
}

// The tile for rows R and vectors V, chosen at run time.
using TileFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, const float*, float*,
                        int64_t);

template <int R>
constexpr TileFn kTileRow[kMaxVectors] = {Tile<R, 1>, Tile<R, 2>, Tile<R, 3>, Tile<R, 4>};
constexpr const TileFn* kTiles[kMaxRows] = {kTileRow<1>, kTileRow<2>, kTileRow<3>,
                                            kTileRow<4>, kTileRow<5>, kTileRow<6>};

TileFn GetTile(int rows, int64_t vectors) { return kTiles[rows - 1][vectors - 1]; }

int64_t RoundUp16(int64_t n) { return (n + 15) / 16 * 16; }

}  // namespace

void AttendWithAvx512(const AttentionShape& shape, const float* q, const float* k, const float* v,
                      int64_t T, float* out, bool round_probabilities, int64_t first_query) {
  const int64_t H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  const int64_t G = H / KV, q_stride = H * hd, kv_stride = KV * hd;
  const int64_t padded = RoundUp16(T);  // keys, the padding zeros
  // K transposed, [kv head][dim][token]. Kept from call to call: a fresh one would fault its
  // pages in every time. The threads of the parallel regions below see it through a plain
  // pointer (a thread_local is theirs).
  thread_local std::vector<float> kt_storage;
  kt_storage.resize(KV * hd * padded);
  float* const kt = kt_storage.data();
  // In blocks of 64 tokens, so that a block's rows of K stay in L1 while each dimension's row
  // of K^T is written 64 floats at a time.
  const int64_t token_blocks = padded / 64 + 1;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < KV * token_blocks; ++item) {
    const int64_t kh = item / token_blocks, t0 = item % token_blocks * 64;
    const int64_t t1 = std::min(padded, t0 + 64);
    float* dst = kt + kh * hd * padded;
    for (int64_t d = 0; d < hd; ++d) {
      for (int64_t t = t0; t < t1; ++t) {
        dst[d * padded + t] = t < T ? k[t * kv_stride + kh * hd + d] : 0.f;
      }
    }
  }
  const float scale = shape.Scale();
  // The blocks holding the queries asked; a row's answer does not depend on the rows computed
  // with it (only zero probabilities are added past a row's own keys).
  const int64_t blocks = (T + kBlock - 1) / kBlock, first_block = first_query / kBlock;
  const int64_t asked = blocks - first_block;
#pragma omp parallel
  {
    thread_local std::vector<float> scores;  // [kBlock, padded] of one work item
    scores.resize(kBlock * padded);
    float* s = scores.data();
    // Later blocks see more keys: taking them first balances the threads.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < H * asked; ++item) {
      const int64_t block = blocks - 1 - item / H, h = item % H, kh = h / G;
      const int64_t r0 = block * kBlock, rows = std::min(kBlock, T - r0);
      for (int64_t g = std::max<int64_t>(0, first_query - r0); g < rows; g += kMaxRows) {
        const int R = static_cast<int>(std::min<int64_t>(kMaxRows, rows - g));
        const int64_t t0 = r0 + g;             // first query row of the tile
        const int64_t seen = t0 + R;           // keys [0, seen) are visible to some row
        const int64_t cols = RoundUp16(seen);  // computed, the rest of a vector included
        const float* qg = q + t0 * q_stride + h * hd;
        float* sg = s + g * padded;
        for (int64_t j = 0; j < cols; j += 16 * kMaxVectors) {
          const int64_t vecs = std::min<int64_t>(kMaxVectors, (cols - j) / 16);
          GetTile(R, vecs)(qg, q_stride, kt + kh * hd * padded + j, padded, hd, nullptr, sg + j,
                           padded);
        }
        float inv_sum[kMaxRows];
        for (int r = 0; r < R; ++r) {
          inv_sum[r] = UnnormalizedSoftmax(sg + r * padded, t0 + r + 1, cols, scale);
          if (round_probabilities)
            FloatsToBFloat16Values(sg + r * padded, t0 + r + 1, sg + r * padded);
        }
        float* og = out + t0 * q_stride + h * hd;
        for (int64_t d = 0; d < hd; d += 16 * kMaxVectors) {
          const int64_t vecs = std::min<int64_t>(kMaxVectors, (hd - d) / 16);
          GetTile(R, vecs)(sg, padded, v + kh * hd + d, kv_stride, seen, inv_sum, og + d, q_stride);
        }
      }
    }
  }
}

}  // namespace internal
}  // namespace superweight
