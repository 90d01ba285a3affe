// Built with AMX, AVX-512 and AVX512-BF16 enabled; matmul.cc picks the unit (AmxInput::unit) the
// CPU class allows: the tiles only where AmxEnabled(), the dot products where AVX512-BF16 is,
// the FMA unit from AVX-512 up.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source, which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "engine/runtime/amx_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/runtime/amx_tiles.h"
#include "engine/runtime/fast_math.h"
#include "engine/runtime/softmax_avx512.h"

namespace superweight::internal {

void AmxPackActivations(const float* x, int64_t m, int64_t k, int parts,
                        CacheAlignedVector<uint16_t>* planes) {
  const int64_t padded_m = AmxPaddedTokens(m), plane = padded_m * k;
  planes->resize(parts * plane);
  uint16_t* out = planes->data();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < padded_m; ++t) {
    for (int64_t c = 0; c < k; c += 16) {  // k is a multiple of 32: no column tail
      __m512 v = t < m ? _mm512_loadu_ps(x + t * k + c) : _mm512_setzero_ps();
      for (int p = 0; p < parts; ++p) {
        const __m256i h = ToBf16(v);
        // Tile order: per 32 tokens, per 32 columns, per part, a 32 x 32 block.
        uint16_t* block = out + ((t / 32 * (k / 32) + c / 32) * parts + p) * 1024;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(block + t % 32 * 32 + c % 32), h);
        // What remains of x after this part, exactly.
        if (p + 1 < parts) {
          v = _mm512_sub_ps(v,
                            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
        }
      }
    }
  }
}

void AmxBlockSums(const float* x, int64_t m, int64_t k, CacheAlignedVector<float>* sums) {
  const int64_t padded_m = AmxPaddedTokens(m), steps = k / 32;
  sums->assign(padded_m * steps, 0.f);
  float* out = sums->data();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t s = 0; s < steps; ++s) {
      const float* v = x + t * k + s * 32;
      out[(t / 32 * steps + s) * 32 + t % 32] =
          _mm512_reduce_add_ps(_mm512_add_ps(_mm512_loadu_ps(v), _mm512_loadu_ps(v + 16)));
    }
  }
}

namespace {

// acc (four 16x16 tiles of a 32x32 block, as StoreProducts lays them out) gets one step's
// products scaled per weight row, plus the offset times the tokens' sums over the step's
// columns: sum over the step of x (scale code + offset). `first` sets acc instead.
inline void AddScaledStep(const float* products, const float* scale, const float* offset,
                          const float* token_sums, bool first, float* acc) {
  for (int tile = 0; tile < 4; ++tile) {
    const int i = tile / 2, c = tile % 2;
    const __m512 d = _mm512_load_ps(scale + 16 * c);
    const __m512 o = offset != nullptr ? _mm512_load_ps(offset + 16 * c) : _mm512_setzero_ps();
    for (int r = 0; r < 16; ++r) {
      const int at = 256 * tile + 16 * r;
      __m512 sum = _mm512_mul_ps(d, _mm512_load_ps(products + at));
      if (offset != nullptr) sum = _mm512_fmadd_ps(o, _mm512_set1_ps(token_sums[16 * i + r]), sum);
      _mm512_store_ps(acc + at, first ? sum : _mm512_add_ps(_mm512_load_ps(acc + at), sum));
    }
  }
}

// Weight rows [o0, o0 + rows) (rows <= 32; the rest of the block reads as zeros) as the tiles'
// B operand: 16 pairs along k by 16 weight rows, in 16x16 register transposes, each tile's 1 KiB
// contiguous (tile h of step s at tiles + 512 s + 256 h): a tile load of 16 consecutive rows is
// faster than one of rows 128 bytes apart (1.1B bf16 pass 1.05x). Decoded weights also leave
// their scales, then offsets, in scales[steps * 32] each.
void PackWeightTiles(const AmxWeights& w, int64_t o0, int64_t rows, int64_t k,
                     CacheAlignedVector<uint16_t>* converted, float* scales, uint32_t* tiles) {
  const int64_t steps = k / 32;
  const char* src;
  int64_t src_stride;
  if (w.decode) {
    converted->resize(32 * k);
    if (rows < 32) {  // the missing rows' codes and scales are zero: no products
      std::fill(converted->begin(), converted->end(), uint16_t{0});
      std::fill(scales, scales + 2 * steps * 32, 0.f);
    }
    w.decode(o0, rows, converted->data(), scales, scales + steps * 32);
    src_stride = k * 2;
    src = reinterpret_cast<const char*>(converted->data());
  } else if (w.in_place != nullptr && rows == 32) {
    src_stride = w.row_bytes;
    src = reinterpret_cast<const char*>(w.in_place) + o0 * src_stride;
  } else {
    converted->resize(32 * k);
    w.convert(o0, rows, converted->data());
    std::fill(converted->begin() + rows * k, converted->end(), uint16_t{0});
    src_stride = k * 2;
    src = reinterpret_cast<const char*>(converted->data());
  }
  for (int64_t c = 0; c < k / 2; c += 16) {
    for (int h = 0; h < 2; ++h) {
      __m512 r[16];
      for (int q = 0; q < 16; ++q) r[q] = _mm512_loadu_ps(src + (16 * h + q) * src_stride + c * 4);
      Transpose16(r);
      uint32_t* tile = tiles + c / 16 * 512 + h * 256;
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(tile + 16 * i, r[i]);
    }
  }
}

// Runs Group<n>::Run(first_token, args...) for the groups of at most 8 tokens that cover
// `tokens`: the last group as wide as the tokens left, so that a 10-token prompt computes 8 + 2
// token lanes, not 8 + 8. Each token's sums are the same whatever its group's width (the same
// products in the same order), so a sequence scores alike alone and in a batch.
template <template <int> class Group, typename... Args>
inline void ForEachTokenGroup(int64_t tokens, Args... args) {
  for (int64_t t0 = 0; t0 < tokens; t0 += 8) {
    switch (std::min<int64_t>(8, tokens - t0)) {
      case 8:
        Group<8>::Run(t0, args...);
        break;
      case 7:
        Group<7>::Run(t0, args...);
        break;
      case 6:
        Group<6>::Run(t0, args...);
        break;
      case 5:
        Group<5>::Run(t0, args...);
        break;
      case 4:
        Group<4>::Run(t0, args...);
        break;
      case 3:
        Group<3>::Run(t0, args...);
        break;
      case 2:
        Group<2>::Run(t0, args...);
        break;
      default:
        Group<1>::Run(t0, args...);
        break;
    }
  }
}

// Two accumulators per token of a group (32 weight rows) into sums as StoreProducts lays them
// out.
template <int kTokens>
inline void StoreGroup(const __m512 (&acc)[kTokens][2], int64_t t0, float* sums) {
  for (int t = 0; t < kTokens; ++t) {
    const int64_t token = t0 + t;
    float* row = sums + 512 * (token / 16) + 16 * (token % 16);
    _mm512_store_ps(row, acc[t][0]);
    _mm512_store_ps(row + 256, acc[t][1]);
  }
}

// The products of one 32x32 block (32 tokens from the planes' block, one part: bf16 precision; 32
// weight rows from the packed tiles) over `steps` steps of 32 columns, on AVX512-BF16's dot
// product, into sums as StoreProducts lays them out. The B operand is the tiles' own layout
// (16 rows of bf16 pairs for each pair of columns: one vector), A a broadcast pair; up to 8
// tokens by 32 rows in 16 accumulators at a time. Tokens past `tokens` are left as they are
// (never read).
template <int kTokens>
struct DotGroup {
  static void Run(int64_t t0, const uint16_t* planes, const uint32_t* tiles, int64_t steps,
                  float* sums) {
    __m512 acc[kTokens][2];
    for (int t = 0; t < kTokens; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    for (int64_t s = 0; s < steps; ++s) {
      const uint32_t* b = tiles + s * 512;
      const uint16_t* a = planes + s * 1024 + t0 * 32;
      for (int pair = 0; pair < 16; ++pair) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512(b + 16 * pair);
        const __m512bh b1 = (__m512bh)_mm512_load_si512(b + 256 + 16 * pair);
#pragma GCC unroll 8
        for (int t = 0; t < kTokens; ++t) {
          const __m512bh x =
              (__m512bh)_mm512_broadcastd_epi32(_mm_loadu_si32(a + t * 32 + 2 * pair));
          acc[t][0] = _mm512_dpbf16_ps(acc[t][0], x, b0);
          acc[t][1] = _mm512_dpbf16_ps(acc[t][1], x, b1);
        }
      }
    }
    StoreGroup<kTokens>(acc, t0, sums);
  }
};
inline void DotProducts(const uint16_t* planes, const uint32_t* tiles, int64_t steps,
                        int64_t tokens, float* sums) {
  ForEachTokenGroup<DotGroup>(tokens, planes, tiles, steps, sums);
}

// Weight rows [o0, o0 + rows) (rows <= 32; the rest read as zeros) as the FMA unit's B operand:
// for each column c, the 32 rows' values at columns + 32 c, by 16x16 register transposes of the
// rows converted to f32 (convert_f32).
void PackWeightColumns(const AmxWeights& w, int64_t o0, int64_t rows, int64_t k,
                       CacheAlignedVector<float>* converted, float* columns) {
  converted->resize(32 * k);
  w.convert_f32(o0, rows, converted->data());
  std::fill(converted->begin() + rows * k, converted->end(), 0.f);
  for (int64_t c = 0; c < k; c += 16) {
    for (int h = 0; h < 2; ++h) {
      __m512 r[16];
      for (int q = 0; q < 16; ++q) r[q] = _mm512_load_ps(converted->data() + (16 * h + q) * k + c);
      Transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_store_ps(columns + (c + i) * 32 + 16 * h, r[i]);
    }
  }
}

// The products of one 32x32 block (`tokens` rows of x, k apart; 32 weight rows as
// PackWeightColumns lays them out) in f32 FMA, into sums as StoreProducts lays them out: up to 8
// tokens by 32 rows in 16 accumulators at a time. Tokens past `tokens` are left as they are
// (never read).
template <int kTokens>
struct FmaGroup {
  static void Run(int64_t t0, const float* x, int64_t k, const float* columns, float* sums) {
    __m512 acc[kTokens][2];
    for (int t = 0; t < kTokens; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    const float* row[kTokens];
    for (int t = 0; t < kTokens; ++t) row[t] = x + (t0 + t) * k;
    for (int64_t c = 0; c < k; ++c) {
      const __m512 b0 = _mm512_load_ps(columns + 32 * c);
      const __m512 b1 = _mm512_load_ps(columns + 32 * c + 16);
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) {
        const __m512 a = _mm512_set1_ps(row[t][c]);
        acc[t][0] = _mm512_fmadd_ps(a, b0, acc[t][0]);
        acc[t][1] = _mm512_fmadd_ps(a, b1, acc[t][1]);
      }
    }
    StoreGroup<kTokens>(acc, t0, sums);
  }
};
inline void FmaProducts(const float* x, int64_t k, const float* columns, int64_t tokens,
                        float* sums) {
  ForEachTokenGroup<FmaGroup>(tokens, x, k, columns, sums);
}

// The loop the entry points share, over `count` (1 or 2) matrices of the same shape: every
// 32x32 block of products (32 tokens from t0, 32 weight rows from o0; `tokens` and `rows` of
// them real) is handed to finish(sums, t0, tokens, o0, rows, thread) as four 16x16 tiles per
// matrix in L1: for matrix j, tile 2i + c at sums + 1024 j + 256 (2i + c) holds tokens
// [16i, 16i + 16) x rows [16c, 16c + 16), rows 64 bytes apart. The blocks of weight rows go to
// the threads `grab` at a time: consecutive blocks, taken by one thread in order. kUnit
// (x.unit) multiplies; decoded weights (AmxWeights::decode) are the tiles' only.
template <PackedUnit kUnit, typename Finish>
void ForEachProductBlock(const AmxWeights* ws, int count, const AmxInput& x, int64_t grab,
                         Finish&& finish) {
  constexpr bool kTiles = kUnit == PackedUnit::kTiles, kFma = kUnit == PackedUnit::kFma;
  const int parts = x.parts;
  const int64_t m = x.m, k = x.k, padded_m = AmxPaddedTokens(m), pairs = k / 2;
  const int64_t token_blocks = padded_m / 32, steps = k / 32, row_blocks = (ws[0].rows + 31) / 32;
  const int64_t chunk_blocks = ActivationChunkBlocks(k, kFma ? 4 : 2 * parts, kUnit);
  // Tiles 0-3: the 2x2 block of f32 products (32 tokens x 32 weight rows); 4-5: two 16-token
  // slabs of activations; 6-7: two 16-row slabs of weights.
#pragma omp parallel
  {
    if constexpr (kTiles) {
      const TileConfig config;
      _tile_loadconfig(&config);
    }
    const int thread = omp_get_thread_num();
    alignas(64) float sums[2 * 4 * 16 * 16];
    alignas(64) float step_products[2 * 4 * 16 * 16];     // decoded weights: two steps in flight
    thread_local CacheAlignedVector<uint16_t> converted;  // one block of 32 rows, as stored
    thread_local CacheAlignedVector<uint32_t> vnni;       // the same as bf16 pairs, in tiles
    thread_local CacheAlignedVector<float> block_scales;  // per matrix: scale, then offset
    thread_local CacheAlignedVector<float> rows_f32, columns_f32;  // the FMA unit's block
    if constexpr (kFma) {
      columns_f32.resize(count * k * 32);
    } else {
      vnni.resize(count * pairs * 32);
      block_scales.resize(count * 2 * steps * 32);
    }
    // Token chunks, each a pass over all the weights (see ActivationChunkBlocks).
    for (int64_t tb0 = 0; tb0 < token_blocks; tb0 += chunk_blocks) {
      const int64_t tb1 = std::min(token_blocks, tb0 + chunk_blocks);
#pragma omp for schedule(dynamic, grab)
      for (int64_t block = 0; block < row_blocks; ++block) {
        const int64_t o0 = block * 32, rows = std::min<int64_t>(32, ws[0].rows - o0);
        for (int j = 0; j < count; ++j) {
          if constexpr (kFma) {
            PackWeightColumns(ws[j], o0, rows, k, &rows_f32, columns_f32.data() + j * k * 32);
          } else {
            PackWeightTiles(ws[j], o0, rows, k, &converted,
                            block_scales.data() + j * 2 * steps * 32, vnni.data() + j * pairs * 32);
          }
        }
        for (int64_t tb = tb0; tb < tb1; ++tb) {
          const int64_t t0 = tb * 32, tokens = std::min<int64_t>(32, m - t0);
          for (int j = 0; j < count; ++j) {
            if constexpr (kFma) {
              FmaProducts(x.f32 + t0 * k, k, columns_f32.data() + j * k * 32, tokens,
                          sums + 1024 * j);
              continue;
            }
            const uint32_t* const matrix_tiles = vnni.data() + j * pairs * 32;
            const uint16_t* const token_planes = x.planes + tb * steps * parts * 1024;
            if constexpr (!kTiles) {
              DotProducts(token_planes, matrix_tiles, steps, tokens, sums + 1024 * j);
              continue;
            }
            if (!ws[j].decode) {
              ZeroProducts();
              for (int64_t s = 0; s < steps; ++s) {
                const uint32_t* b = matrix_tiles + s * 512;
                const uint16_t* a = token_planes + s * parts * 1024;
                for (int p = 0; p < parts; ++p, a += 1024) {
                  MultiplyStep(a, a + 512, 64, b, b + 256, 64, p == 0);
                }
              }
              // The tiles go to `sums` in L1, where the finisher reads them: tile stores straight
              // into y missed the cache row by row while the next block's products waited on
              // them.
              StoreProducts(sums + 1024 * j);
              continue;
            }
            // Decoded weights: each step (one quant block along k) has its own scale per weight
            // row, so its products leave the tiles every step. Step s - 1's are scaled while the
            // tiles work on step s.
            const float* const scale = block_scales.data() + j * 2 * steps * 32;
            const float* const offset = ws[j].offsets ? scale + steps * 32 : nullptr;
            const float* const token_sums =
                ws[j].offsets ? x.block_sums + tb * steps * 32 : nullptr;
            const auto scale_step = [&](int64_t s) {
              AddScaledStep(step_products + 1024 * (s % 2), scale + s * 32,
                            offset != nullptr ? offset + s * 32 : nullptr,
                            token_sums != nullptr ? token_sums + s * 32 : nullptr, s == 0,
                            sums + 1024 * j);
            };
            for (int64_t s = 0; s < steps; ++s) {
              ZeroProducts();
              const uint32_t* b = matrix_tiles + s * 512;
              const uint16_t* a = token_planes + s * parts * 1024;
              for (int p = 0; p < parts; ++p, a += 1024) {
                MultiplyStep(a, a + 512, 64, b, b + 256, 64, p == 0);
              }
              if (s > 0) scale_step(s - 1);
              StoreProducts(step_products + 1024 * (s % 2));
            }
            scale_step(steps - 1);
          }
          finish(sums, t0, tokens, o0, rows, thread);
        }
      }
    }
    if constexpr (kTiles) _tile_release();
  }
}

// ForEachProductBlock on the input's unit.
template <typename Finish>
void ForEachProductBlockOn(const AmxWeights* ws, int count, const AmxInput& x, int64_t grab,
                           Finish&& finish) {
  switch (x.unit) {
    case PackedUnit::kTiles:
      return ForEachProductBlock<PackedUnit::kTiles>(ws, count, x, grab, finish);
    case PackedUnit::kDots:
      return ForEachProductBlock<PackedUnit::kDots>(ws, count, x, grab, finish);
    case PackedUnit::kFma:
    case PackedUnit::kFmaAvx2:  // the same input; matmul.cc sends it to FmaAvx2Gemm off AVX-512
      return ForEachProductBlock<PackedUnit::kFma>(ws, count, x, grab, finish);
  }
}

// Masks of a block's real rows among the 16 + 16 columns of each product row.
inline __mmask16 LowColumns(int64_t rows) {
  return static_cast<__mmask16>(rows >= 16 ? 0xFFFF : (1u << rows) - 1);
}
inline __mmask16 HighColumns(int64_t rows) {
  return static_cast<__mmask16>(rows >= 32 ? 0xFFFF : rows <= 16 ? 0 : (1u << (rows - 16)) - 1);
}

}  // namespace

void AmxGemm(const AmxWeights& w, const AmxInput& x, float* y, int64_t ldy, bool add_to_y) {
  ForEachProductBlockOn(
      &w, 1, x, /*grab=*/1,
      [&](const float* sums, int64_t t0, int64_t tokens, int64_t o0, int64_t rows, int /*thread*/) {
        const __mmask16 lo = LowColumns(rows), hi = HighColumns(rows);
        float* y0 = y + t0 * ldy + o0;
        for (int64_t i = 0; i < tokens; ++i) {
          const float* row = sums + (i / 16) * 512 + (i % 16) * 16;
          float* out = y0 + i * ldy;
          __m512 a = _mm512_load_ps(row), b = _mm512_load_ps(row + 256);
          if (add_to_y) {
            a = _mm512_add_ps(_mm512_maskz_loadu_ps(lo, out), a);
            b = _mm512_add_ps(_mm512_maskz_loadu_ps(hi, out + 16), b);
          }
          _mm512_mask_storeu_ps(out, lo, a);
          _mm512_mask_storeu_ps(out + 16, hi, b);
        }
      });
}

void AmxGemmSwiGlu(const AmxWeights& gate, const AmxWeights& up, const AmxInput& x, float* y,
                   int64_t ldy) {
  const AmxWeights both[2] = {gate, up};
  ForEachProductBlockOn(
      both, 2, x, /*grab=*/1,
      [&](const float* sums, int64_t t0, int64_t tokens, int64_t o0, int64_t rows, int /*thread*/) {
        for (int64_t i = 0; i < tokens; ++i) {
          const float* g = sums + (i / 16) * 512 + (i % 16) * 16;
          const float* u = g + 1024;
          float* out = y + (t0 + i) * ldy + o0;
#pragma omp simd
          for (int64_t c = 0; c < std::min<int64_t>(rows, 16); ++c) {
            out[c] = SwiGluOf(g[c], u[c]);
          }
#pragma omp simd
          for (int64_t c = 16; c < rows; ++c) {
            out[c] = SwiGluOf(g[c + 240], u[c + 240]);
          }
        }
      });
}

void AmxGemmLogSumExp(const AmxWeights& w, const AmxInput& x, const int32_t* targets,
                      float* row_shift, double* row_sum, float* target) {
  const int64_t m = x.m;
  // Per token, each group of consecutive blocks of weight rows keeps a shift and 16 lanes of
  // sums of exp(product - shift) over its columns, merged in group order at the end. A group is
  // one grab of the threads' schedule, summed block after block by whichever thread took it, so
  // the sums do not depend on which thread took what (kept per thread, they moved in the last
  // bits from run to run), and no two threads write the same accumulator. The shift moves (and
  // the lanes are rescaled) only when a product passes it by more than kSlack, which stops
  // happening after a group's first blocks; below that each term is at most e^16 and the sum of
  // a whole vocabulary stays far from f32's range.
  constexpr float kSlack = 16.f;
  constexpr int64_t kGroups = 32;  // enough grabs to balance the threads of one socket
  const int64_t row_blocks = (w.rows + 31) / 32;
  const int64_t grab = (row_blocks + kGroups - 1) / kGroups;
  const int64_t groups = (row_blocks + grab - 1) / grab;
  thread_local CacheAlignedVector<float> shifts;
  thread_local CacheAlignedVector<float> lanes;  // zeroed by a group's first block, not here
  shifts.assign(groups * m, -std::numeric_limits<float>::infinity());
  lanes.resize(groups * m * 16);
  float* const group_shift = shifts.data();
  float* const group_lanes = lanes.data();
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  ForEachProductBlockOn(
      &w, 1, x, grab,
      [&](const float* sums, int64_t t0, int64_t tokens, int64_t o0, int64_t rows, int /*thread*/) {
        const __mmask16 lo = LowColumns(rows), hi = HighColumns(rows);
        const int64_t group = o0 / 32 / grab;
        float* const shift = group_shift + group * m + t0;
        float* const acc = group_lanes + (group * m + t0) * 16;
        for (int64_t i = 0; i < tokens; ++i) {
          const float* row = sums + (i / 16) * 512 + (i % 16) * 16;
          const __m512 a = _mm512_mask_blend_ps(lo, minus_inf, _mm512_load_ps(row));
          const __m512 b = _mm512_mask_blend_ps(hi, minus_inf, _mm512_load_ps(row + 256));
          const bool first = shift[i] == -std::numeric_limits<float>::infinity();
          __m512 sum = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + 16 * i);
          const __m512 both = _mm512_max_ps(a, b);
          if (_mm512_cmp_ps_mask(both, _mm512_set1_ps(shift[i] + kSlack), _CMP_GT_OQ) != 0) {
            const float moved = MaxOf16(both);
            sum = _mm512_mul_ps(sum, _mm512_set1_ps(std::exp(shift[i] - moved)));
            shift[i] = moved;
          }
          const __m512 s = _mm512_set1_ps(shift[i]);
          sum = _mm512_mask_add_ps(sum, lo, sum, Exp16(_mm512_sub_ps(a, s)));
          sum = _mm512_mask_add_ps(sum, hi, sum, Exp16(_mm512_sub_ps(b, s)));
          _mm512_store_ps(acc + 16 * i, sum);
          const int64_t column = targets[t0 + i] - o0;
          if (column >= 0 && column < rows) target[t0 + i] = row[column / 16 * 256 + column % 16];
        }
      });
  for (int64_t t = 0; t < m; ++t) {
    float shift = -std::numeric_limits<float>::infinity();
    for (int64_t g = 0; g < groups; ++g) shift = std::max(shift, group_shift[g * m + t]);
    double total = 0;
    for (int64_t g = 0; g < groups; ++g) {
      if (group_shift[g * m + t] == -std::numeric_limits<float>::infinity()) continue;
      double part = 0;
      for (int lane = 0; lane < 16; ++lane) part += group_lanes[(g * m + t) * 16 + lane];
      total += part * std::exp(static_cast<double>(group_shift[g * m + t]) - shift);
    }
    row_shift[t] = shift;
    row_sum[t] = total;
  }
}

}  // namespace superweight::internal
