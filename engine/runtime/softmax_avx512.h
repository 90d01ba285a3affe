// Softmax on 16 lanes, shared by the attention kernels (AVX-512 in f32, AMX in bf16). Included
// only by files built with AVX-512F enabled (see engine/CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace superweight::internal {
// Internal linkage on purpose: the including files are built for different instruction sets,
// and one shared inline copy could carry instructions that the other's CPU lacks.
namespace {

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
inline float UnnormalizedSoftmax(float* row, int64_t visible, int64_t end, float scale) {
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

}  // namespace
}  // namespace superweight::internal
