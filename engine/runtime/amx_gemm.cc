// Built with AMX and AVX-512 enabled; called only where AmxEnabled() (matmul.cc) said yes.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source, which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "engine/runtime/amx_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "engine/runtime/amx_tiles.h"

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

void AmxGemm(const AmxWeights& w, const uint16_t* planes, int parts, int64_t m, int64_t k, float* y,
             int64_t ldy) {
  const int64_t padded_m = AmxPaddedTokens(m), pairs = k / 2;
  const int64_t token_blocks = padded_m / 32, steps = k / 32, row_blocks = (w.rows + 31) / 32;
  // Tiles 0-3: the 2x2 block of f32 products (32 tokens x 32 weight rows); 4-5: two 16-token
  // slabs of activations; 6-7: two 16-row slabs of weights.
#pragma omp parallel
  {
    const TileConfig config;
    _tile_loadconfig(&config);
    alignas(64) float sums[4 * 16 * 16];
    thread_local CacheAlignedVector<uint16_t> converted;  // one block of 32 rows, as stored
    thread_local CacheAlignedVector<uint32_t> vnni;       // the same as bf16 pairs, in tiles
    vnni.resize(pairs * 32);
#pragma omp for schedule(dynamic)
    for (int64_t block = 0; block < row_blocks; ++block) {
      const int64_t o0 = block * 32, rows = std::min<int64_t>(32, w.rows - o0);
      const char* src;
      int64_t src_stride;
      if (w.in_place != nullptr && rows == 32) {
        src_stride = w.row_bytes;
        src = reinterpret_cast<const char*>(w.in_place) + o0 * src_stride;
      } else {
        converted.resize(32 * k);
        w.convert(o0, rows, converted.data());
        std::fill(converted.begin() + rows * k, converted.end(), uint16_t{0});
        src_stride = k * 2;
        src = reinterpret_cast<const char*>(converted.data());
      }
      // The tiles' B operand: 16 pairs along k by 16 weight rows, in 16x16 register transposes,
      // each tile's 1 KiB contiguous (tile h of step s at 512 s + 256 h): a tile load of 16
      // consecutive rows is faster than one of rows 128 bytes apart (1.1B bf16 pass 1.05x).
      for (int64_t c = 0; c < pairs; c += 16) {
        for (int h = 0; h < 2; ++h) {
          __m512 r[16];
          for (int q = 0; q < 16; ++q) {
            r[q] = _mm512_loadu_ps(src + (16 * h + q) * src_stride + c * 4);
          }
          Transpose16(r);
          uint32_t* tile = vnni.data() + c / 16 * 512 + h * 256;
          for (int j = 0; j < 16; ++j) _mm512_storeu_ps(tile + 16 * j, r[j]);
        }
      }
      // The block's rows among the 16 + 16 columns of each product row.
      const auto lo = static_cast<__mmask16>(rows >= 16 ? 0xFFFF : (1u << rows) - 1);
      const auto hi = static_cast<__mmask16>(rows >= 32   ? 0xFFFF
                                             : rows <= 16 ? 0
                                                          : (1u << (rows - 16)) - 1);
      for (int64_t tb = 0; tb < token_blocks; ++tb) {
        ZeroProducts();
        for (int64_t s = 0; s < steps; ++s) {
          const uint32_t* b = vnni.data() + s * 512;
          const uint16_t* a = planes + (tb * steps + s) * parts * 1024;
          for (int p = 0; p < parts; ++p, a += 1024) {
            MultiplyStep(a, a + 512, 64, b, b + 256, 64, p == 0);
          }
        }
        // Tile 2i + j holds tokens [16i, 16i + 16) x weight rows [16j, 16j + 16) of the block.
        // The tiles go to `sums` in L1 and vector stores copy them into y: tile stores straight
        // into y missed the cache row by row while the next block's products waited on them.
        StoreProducts(sums);
        const int64_t t0 = tb * 32, tokens = std::min<int64_t>(32, m - t0);
        float* y0 = y + t0 * ldy + o0;
        for (int64_t i = 0; i < tokens; ++i) {
          const float* row = sums + (i / 16) * 512 + (i % 16) * 16;
          _mm512_mask_storeu_ps(y0 + i * ldy, lo, _mm512_load_ps(row));
          _mm512_mask_storeu_ps(y0 + i * ldy + 16, hi, _mm512_load_ps(row + 256));
        }
      }
    }
    _tile_release();
  }
}

}  // namespace superweight::internal
