// Causal attention with AVX-512 register tiles. Built with -mavx512f -mavx512bf16; attention.cc
// calls it only where the CPU reports AVX-512F, and asks for bf16 products only where it
// reports AVX512-BF16.
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

namespace superweight {
namespace internal {
namespace {

constexpr int kMaxRows = 6;     // query rows per register tile
constexpr int kMaxVectors = 4;  // 16-float vectors per register tile row
constexpr int64_t kBlock = 64;  // query rows per work item

// The products in f32: a broadcast float times 16 consecutive floats.
struct F32Products {
  using A = float;
  using B = float;
  static constexpr int kBPerVector = 16;
  static __m512 Load(const float* b) { return _mm512_loadu_ps(b); }
  static __m512 Broadcast(float a) { return _mm512_set1_ps(a); }
  static __m512 Fma(__m512 acc, __m512 a, __m512 b) { return _mm512_fmadd_ps(a, b, acc); }
};

// The products in bf16, on VDPBF16PS: each 32-bit lane holds a pair of bf16 along the reduction
// (two dimensions for QK^T, two keys for PV) and the instruction adds both products to an f32
// accumulator.
struct Bf16PairProducts {
  using A = uint32_t;  // a broadcast pair
  using B = uint16_t;  // 16 columns of pairs per vector
  static constexpr int kBPerVector = 32;
  static __m512bh Load(const uint16_t* b) {
    return reinterpret_cast<__m512bh>(_mm512_loadu_si512(b));
  }
  static __m512bh Broadcast(uint32_t a) {
    return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a)));
  }
  static __m512 Fma(__m512 acc, __m512bh a, __m512bh b) { return _mm512_dpbf16_ps(acc, a, b); }
};

// A register tile: c[r, 0:16V] = row_scale[r] (1 if null) * sum_{p < depth} a[r, p] * b[p, 0:16V]
// for r in [0, R), a broadcast, b read a vector at a time. QK^T takes a = queries, b = K^T
// (depth: the head's dimensions); PV takes a = probabilities, b = V (depth: the keys).
template <typename Products, int R, int V>
void Tile(const typename Products::A* a, int64_t lda, const typename Products::B* b, int64_t ldb,
          int64_t depth, const float* row_scale, float* c, int64_t ldc) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < depth; ++p) {
    decltype(Products::Load(b)) bv[V];
    for (int v = 0; v < V; ++v) bv[v] = Products::Load(b + p * ldb + Products::kBPerVector * v);
    for (int r = 0; r < R; ++r) {
      const auto av = Products::Broadcast(a[r * lda + p]);
      for (int v = 0; v < V; ++v) acc[r][v] = Products::Fma(acc[r][v], av, bv[v]);
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
template <typename Products>
using TileFn = void (*)(const typename Products::A*, int64_t, const typename Products::B*, int64_t,
                        int64_t, const float*, float*, int64_t);

template <typename Products>
struct Tiles {
  template <int R>
  static constexpr TileFn<Products> kRow[kMaxVectors] = {
      Tile<Products, R, 1>, Tile<Products, R, 2>, Tile<Products, R, 3>, Tile<Products, R, 4>};
  static constexpr const TileFn<Products>* kAll[kMaxRows] = {kRow<1>, kRow<2>, kRow<3>,
                                                             kRow<4>, kRow<5>, kRow<6>};
  static TileFn<Products> Get(int rows, int64_t vectors) { return kAll[rows - 1][vectors - 1]; }
};

// Horizontal max and sum of 16 lanes.
inline float MaxOf16(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float m = lanes[0];
  for (int i = 1; i < 16; ++i) m = std::max(m, lanes[i]);
  return m;
}
inline float SumOf16(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (int i = 0; i < 16; ++i) s += lanes[i];
  return s;
}

// FastExp (fast_math.h) on 16 lanes: the same clamps, reduction and polynomial, with the
// scaling by 2^n done by VSCALEFPS.
inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-86.f)), _mm512_set1_ps(88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// row[j] = exp((row[j] - max) * scale) for j < visible, 0 for j in [visible, end); returns
// 1 / the sum, by which the caller scales the row's output instead of the row.
float UnnormalizedSoftmax(float* row, int64_t visible, int64_t end, float scale) {
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 16 <= visible; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + j));
  const __mmask16 tail = static_cast<__mmask16>((1u << (visible - j)) - 1);
  mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_mask_loadu_ps(mx, tail, row + j));
  const __m512 shift = _mm512_set1_ps(MaxOf16(mx));
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 sum = _mm512_setzero_ps();
  for (j = 0; j + 16 <= visible; j += 16) {
    const __m512 e = Exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), shift), vscale));
    _mm512_storeu_ps(row + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (j < end) {  // the tail: visible lanes exp'd, the rest zero, up to the next vector end
    const __m512 e = _mm512_maskz_mov_ps(
        tail, Exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), shift), vscale)));
    _mm512_storeu_ps(row + j, e);
    sum = _mm512_add_ps(sum, e);
    j += 16;
  }
  for (; j < end; j += 16) _mm512_storeu_ps(row + j, _mm512_setzero_ps());
  return 1.f / SumOf16(sum);
}

inline uint32_t BFloat16Pair(float lo, float hi) {
  return uint32_t{FloatToBFloat16(lo)} | uint32_t{FloatToBFloat16(hi)} << 16;
}

int64_t RoundUp16(int64_t n) { return (n + 15) / 16 * 16; }

// kBf16: K, V, each query and each row of probabilities rounded to bf16 for the products.
template <bool kBf16>
void Attend(const AttentionShape& shape, const float* q, const float* k, const float* v, int64_t T,
            float* out) {
  const int64_t H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  const int64_t G = H / KV, q_stride = H * hd, kv_stride = KV * hd;
  const int64_t padded = RoundUp16(T);  // keys, the padding zeros
  // K transposed: f32 [kv head][dim][token], or bf16 pairs [kv head][dim / 2][token][2]. V as
  // it is in f32, or bf16 pairs [kv head][token / 2][dim][2]. Kept from call to call: fresh
  // ones would fault their pages in every time. The threads of the parallel regions below see
  // them through plain pointers (a thread_local is theirs).
  thread_local std::vector<float> kt_storage;
  thread_local std::vector<uint16_t> kb_storage, vb_storage;
  if (!kBf16) {
    kt_storage.resize(KV * hd * padded);
  } else {
    kb_storage.resize(KV * hd * padded);
    vb_storage.resize(KV * padded * hd);
  }
  float* const kt = kt_storage.data();
  uint16_t* const kb = kb_storage.data();
  uint16_t* const vb = vb_storage.data();
  // In blocks of 64 tokens, so that a block's rows of K and V stay in L1 while the copies are
  // written a row at a time.
  const int64_t token_blocks = padded / 64 + 1;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < KV * token_blocks; ++item) {
    const int64_t kh = item / token_blocks, t0 = item % token_blocks * 64;
    const int64_t t1 = std::min(padded, t0 + 64);
    auto key = [&](int64_t t, int64_t d) { return t < T ? k[t * kv_stride + kh * hd + d] : 0.f; };
    auto value = [&](int64_t t, int64_t d) { return t < T ? v[t * kv_stride + kh * hd + d] : 0.f; };
    for (int64_t d = 0; d < hd; ++d) {
      for (int64_t t = t0; t < t1; ++t) {
        if (kBf16) {
          kb[kh * hd * padded + ((d / 2) * padded + t) * 2 + d % 2] = FloatToBFloat16(key(t, d));
          vb[kh * padded * hd + ((t / 2) * hd + d) * 2 + t % 2] = FloatToBFloat16(value(t, d));
        } else {
          kt[kh * hd * padded + d * padded + t] = key(t, d);
        }
      }
    }
  }
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int64_t blocks = (T + kBlock - 1) / kBlock;
#pragma omp parallel
  {
    thread_local std::vector<float> scores;    // [kBlock, padded] of one work item
    thread_local std::vector<uint32_t> pairs;  // bf16: a tile's queries, then probabilities
    scores.resize(kBlock * padded);
    if (kBf16) pairs.resize(kMaxRows * std::max(hd, padded) / 2);
    float* s = scores.data();
    uint32_t* pr = pairs.data();
    // Later blocks see more keys: taking them first balances the threads.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < H * blocks; ++item) {
      const int64_t block = blocks - 1 - item / H, h = item % H, kh = h / G;
      const int64_t r0 = block * kBlock, rows = std::min(kBlock, T - r0);
      for (int64_t g = 0; g < rows; g += kMaxRows) {
        const int R = static_cast<int>(std::min<int64_t>(kMaxRows, rows - g));
        const int64_t t0 = r0 + g;             // first query row of the tile
        const int64_t seen = t0 + R;           // keys [0, seen) are visible to some row
        const int64_t cols = RoundUp16(seen);  // computed, the rest of a vector included
        const float* qg = q + t0 * q_stride + h * hd;
        float* sg = s + g * padded;
        if (kBf16) {
          for (int r = 0; r < R; ++r) {
            for (int64_t d = 0; d < hd; d += 2) {
              pr[r * hd / 2 + d / 2] = BFloat16Pair(qg[r * q_stride + d], qg[r * q_stride + d + 1]);
            }
          }
        }
        for (int64_t j = 0; j < cols; j += 16 * kMaxVectors) {
          const int64_t vecs = std::min<int64_t>(kMaxVectors, (cols - j) / 16);
          if (kBf16) {
            Tiles<Bf16PairProducts>::Get(R, vecs)(pr, hd / 2, kb + kh * hd * padded + j * 2,
                                                  padded * 2, hd / 2, nullptr, sg + j, padded);
          } else {
            Tiles<F32Products>::Get(R, vecs)(qg, q_stride, kt + kh * hd * padded + j, padded, hd,
                                             nullptr, sg + j, padded);
          }
        }
        float inv_sum[kMaxRows];
        for (int r = 0; r < R; ++r) {
          inv_sum[r] = UnnormalizedSoftmax(sg + r * padded, t0 + r + 1, cols, scale);
        }
        if (kBf16) {  // probabilities as pairs of keys, zeros past the visible ones
          for (int r = 0; r < R; ++r) {
            for (int64_t j = 0; j < cols; j += 2) {
              pr[r * padded / 2 + j / 2] = BFloat16Pair(sg[r * padded + j], sg[r * padded + j + 1]);
            }
          }
        }
        float* og = out + t0 * q_stride + h * hd;
        for (int64_t d = 0; d < hd; d += 16 * kMaxVectors) {
          const int64_t vecs = std::min<int64_t>(kMaxVectors, (hd - d) / 16);
          if (kBf16) {
            Tiles<Bf16PairProducts>::Get(R, vecs)(pr, padded / 2, vb + kh * padded * hd + d * 2,
                                                  hd * 2, (seen + 1) / 2, inv_sum, og + d,
                                                  q_stride);
          } else {
            Tiles<F32Products>::Get(R, vecs)(sg, padded, v + kh * hd + d, kv_stride, seen, inv_sum,
                                             og + d, q_stride);
          }
        }
      }
    }
  }
}

}  // namespace

bool CausalAttentionAvx512(const AttentionShape& shape, const float* q, const float* k,
                           const float* v, int64_t tokens, float* out, bool bf16) {
  if (shape.head_dim % 16 != 0 || shape.kv_heads <= 0 || shape.heads % shape.kv_heads != 0) {
    return false;
  }
  if (bf16) {
    Attend<true>(shape, q, k, v, tokens, out);
  } else {
    Attend<false>(shape, q, k, v, tokens, out);
  }
  return true;
}

}  // namespace internal
}  // namespace superweight
