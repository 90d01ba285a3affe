// Causal attention on AMX tiles, for the bf16 forward pass: q, k, v and the probabilities are
// rounded to bf16 and every product is summed in f32, as the bf16 matmuls do. Built with AMX
// and AVX-512 enabled; attention.cc calls it only where AmxEnabled() said yes.
//
// Per query head and block of 32 queries (one work item, the costliest first): S = Q K^T for
// the keys the block can see, 32 keys at a time into 2x2 tiles; the softmax of each row in f32
// (softmax_avx512.h), rounded to bf16 as P; then O = P V, 32 dimensions at a time, scaled by
// each row's 1 / sum on the way out. K and V are laid out once per call in tile order (the
// tiles' B operand, bf16 pairs along the summed dimension): K in 16x16 register transposes, V
// by interleaving pairs of rows.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source, which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/runtime/aligned_vector.h"
#include "engine/runtime/amx_tiles.h"
#include "engine/runtime/attention.h"
#include "engine/runtime/softmax_avx512.h"

namespace superweight::internal {
namespace {

constexpr int64_t kBlock = 32;  // queries per work item, keys per step of S and of P V

// Two rows of 16 bf16 interleaved in one register: element i of a at 2i, of b at 2i + 1.
inline __m512i Interleave(__m256i a, __m256i b) {
  const __m512i index = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40,
                                         8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  return _mm512_permutex2var_epi16(_mm512_castsi256_si512(a), index, _mm512_castsi256_si512(b));
}

}  // namespace

void AttendWithTiles(const AttentionShape& shape, const float* q, const float* k, const float* v,
                     int64_t T, float* out, int64_t first_query) {
  const int64_t H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  if (T == 0) return;
  const int64_t G = H / KV, q_stride = H * hd, kv_stride = KV * hd;
  const int64_t padded = (T + kBlock - 1) / kBlock * kBlock, blocks = padded / kBlock;
  const int64_t dim_steps = hd / 32, tile = 16 * 32;  // bf16 elements in a tile
  // Kept from call to call (a fresh one would fault its pages in every time); the threads of
  // the parallel regions below see them through plain pointers (a thread_local is theirs).
  thread_local CacheAlignedVector<uint16_t> q_storage, k_storage, v_storage;
  q_storage.resize(H * padded * hd);
  k_storage.resize(KV * padded * hd);
  v_storage.resize(KV * padded * hd);
  // Q: [head][token][dim], the A operand (16 queries x 32 dims a tile, rows hd apart).
  // K: per kv head, per 16 keys, per 32 dims, a tile of 16 dim pairs x 16 keys.
  // V: per kv head, per 32 keys, per 16 dims, a tile of 16 key pairs x 16 dims.
  uint16_t* const qb = q_storage.data();
  uint16_t* const kb = k_storage.data();
  uint16_t* const vb = v_storage.data();
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < padded; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < hd; d += 16) {
          const __m512 x =
              t < T ? _mm512_loadu_ps(q + t * q_stride + h * hd + d) : _mm512_setzero_ps();
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb + (h * padded + t) * hd + d),
                              ToBf16(x));
        }
      }
    }
#pragma omp for schedule(static)
    for (int64_t item = 0; item < KV * blocks; ++item) {
      const int64_t kh = item / blocks, t0 = item % blocks * kBlock;
      for (int64_t half = 0; half < 2; ++half) {  // 16 keys of K
        const int64_t k0 = t0 + 16 * half;
        for (int64_t ds = 0; ds < dim_steps; ++ds) {
          __m512 r[16];  // row j: the 16 dim pairs of key k0 + j
          for (int64_t j = 0; j < 16; ++j) {
            const float* src = k + (k0 + j) * kv_stride + kh * hd + ds * 32;
            const bool real = k0 + j < T;
            const __m512 lo = real ? _mm512_loadu_ps(src) : _mm512_setzero_ps();
            const __m512 hi = real ? _mm512_loadu_ps(src + 16) : _mm512_setzero_ps();
            r[j] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));
          }
          Transpose16(r);
          uint16_t* dst = kb + ((kh * (padded / 16) + k0 / 16) * dim_steps + ds) * tile;
          for (int p = 0; p < 16; ++p) _mm512_storeu_ps(dst + 32 * p, r[p]);
        }
      }
      for (int64_t dt = 0; dt < hd / 16; ++dt) {  // 32 keys of V, 16 dims at a time
        uint16_t* dst = vb + ((kh * blocks + t0 / kBlock) * (hd / 16) + dt) * tile;
        for (int64_t p = 0; p < 16; ++p) {
          const int64_t k0 = t0 + 2 * p;
          const __m512 a = k0 < T ? _mm512_loadu_ps(v + k0 * kv_stride + kh * hd + 16 * dt)
                                  : _mm512_setzero_ps();
          const __m512 b = k0 + 1 < T
                               ? _mm512_loadu_ps(v + (k0 + 1) * kv_stride + kh * hd + 16 * dt)
                               : _mm512_setzero_ps();
          _mm512_storeu_si512(dst + 32 * p, Interleave(ToBf16(a), ToBf16(b)));
        }
      }
    }
  }
  const float scale = shape.Scale();
#pragma omp parallel
  {
    const TileConfig config;
    _tile_loadconfig(&config);
    thread_local CacheAlignedVector<float> scores;  // [kBlock][padded] of one work item
    thread_local CacheAlignedVector<uint16_t> probs;
    scores.resize(kBlock * padded);
    probs.resize(kBlock * padded);
    float* const s = scores.data();
    uint16_t* const pb = probs.data();
    alignas(64) float sums[4 * 256];
    // Later blocks see more keys: taking them first balances the threads.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < H * (blocks - first_query / kBlock); ++item) {  // blocks asked
      const int64_t block = blocks - 1 - item / H, h = item % H, kh = h / G;
      const int64_t q0 = block * kBlock, seen = q0 + kBlock;  // keys [0, seen) are computed
      const uint16_t* qt = qb + (h * padded + q0) * hd;
      for (int64_t kc = 0; kc <= block; ++kc) {
        ZeroProducts();
        const uint16_t* kt = kb + (kh * (padded / 16) + 2 * kc) * dim_steps * tile;
        for (int64_t ds = 0; ds < dim_steps; ++ds) {
          MultiplyStep(qt + 32 * ds, qt + 16 * hd + 32 * ds, hd * 2, kt + ds * tile,
                       kt + (dim_steps + ds) * tile, 64);
        }
        float* sk = s + kc * kBlock;
        _tile_stored(0, sk, padded * 4);
        _tile_stored(1, sk + 16, padded * 4);
        _tile_stored(2, sk + 16 * padded, padded * 4);
        _tile_stored(3, sk + 16 * padded + 16, padded * 4);
      }
      float inv_sum[kBlock];
      for (int64_t r = 0; r < kBlock; ++r) {
        float* row = s + r * padded;
        // Rows past the sequence's end see one key: finite, and never written out.
        inv_sum[r] = UnnormalizedSoftmax(row, std::min(q0 + r, T - 1) + 1, seen, scale);
        uint16_t* prow = pb + r * padded;
        for (int64_t j = 0; j < seen; j += 16) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(prow + j),
                              ToBf16(_mm512_loadu_ps(row + j)));
        }
      }
      const int64_t rows = std::min(kBlock, T - q0);
      for (int64_t d0 = 0; d0 < hd; d0 += 32) {
        ZeroProducts();
        for (int64_t kc = 0; kc <= block; ++kc) {
          const uint16_t* vt = vb + ((kh * blocks + kc) * (hd / 16) + d0 / 16) * tile;
          MultiplyStep(pb + kc * kBlock, pb + 16 * padded + kc * kBlock, padded * 2, vt, vt + tile,
                       64);
        }
        // Tile 2i + j: queries [16i, 16i + 16) x dims [d0 + 16j, d0 + 16j + 16).
        StoreProducts(sums);
        for (int64_t r = 0; r < rows; ++r) {
          const float* sr = sums + (r / 16) * 512 + (r % 16) * 16;
          const __m512 inv = _mm512_set1_ps(inv_sum[r]);
          float* o = out + (q0 + r) * q_stride + h * hd + d0;
          _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_load_ps(sr), inv));
          _mm512_storeu_ps(o + 16, _mm512_mul_ps(_mm512_load_ps(sr + 256), inv));
        }
      }
    }
    _tile_release();
  }
}

}  // namespace superweight::internal
