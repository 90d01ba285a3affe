// What the AMX kernels share: the tile configuration, the 2x2 block of products (zeroing, one
// step, storing), bf16 rounding and a 16x16 transpose in registers.
// Included only by files built with AMX and AVX-512 enabled (see engine/CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace superweight::internal {

// Eight tiles of 16 rows by 64 bytes (16 f32 or 32 bf16): the kernels use tiles 0-3 for f32
// products, 4-5 for the A operand and 6-7 for the B operand (bf16 pairs along k).
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// 16 floats rounded to bf16 (to nearest even).
inline __m256i ToBf16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }

// The 2x2 block of products, tiles 0-3, set to zero.
inline void ZeroProducts() {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
}

// One step of the 2x2 block: tile 2i + j += A_i x B_j, with A_0, A_1 (tiles 4, 5) 16 rows each
// and B_0, B_1 (tiles 6, 7) bf16 pairs; `load_b` false keeps the B tiles already loaded. Each
// load sits just before the first product that reads it: tiles are not renamed, so a load
// waits for the products still reading its tile, and loading all four tiles ahead of the four
// products stalled the multiplier on every step.
inline void MultiplyStep(const void* a0, const void* a1, int64_t a_stride, const void* b0,
                         const void* b1, int64_t b_stride, bool load_b = true) {
  _tile_loadd(4, a0, a_stride);
  if (load_b) _tile_loadd(6, b0, b_stride);
  _tile_dpbf16ps(0, 4, 6);
  if (load_b) _tile_loadd(7, b1, b_stride);
  _tile_dpbf16ps(1, 4, 7);
  _tile_loadd(5, a1, a_stride);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

// Tiles 0-3 into sums[4][16][16] (tile t at sums + 256 t), rows 64 bytes apart.
inline void StoreProducts(float* sums) {
  _tile_stored(0, sums, 64);
  _tile_stored(1, sums + 256, 64);
  _tile_stored(2, sums + 512, 64);
  _tile_stored(3, sums + 768, 64);
}

// Transposes 16x16 32-bit elements in registers: on return r[c] holds column c.
inline void Transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int g = 0; g < 16; g += 8) {
    for (int j = 0; j < 4; ++j) {
      t[g + j] = _mm512_shuffle_f32x4(r[g + j], r[g + j + 4], 0x88);
      t[g + j + 4] = _mm512_shuffle_f32x4(r[g + j], r[g + j + 4], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}

}  // namespace superweight::internal
