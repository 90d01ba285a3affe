// AVX2 dequantization kernels, included by dequantize.cc and by dequantize_avx512bf16.cc, which
// is built with other target flags: everything here has internal linkage, so that each file
// keeps its own copy and no AVX-512 code can stand in for the AVX2 one at link time.
//
// The arithmetic is the scalar loops', eight lanes at a time: the products q * d are exact in
// f32 (at most 8 x 11 significant bits), so fused and separate multiply-adds agree and the
// results stay bit-exact with llama.cpp. A Sink says how eight floats are stored (f32, or
// rounded to bf16). Each kernel converts n elements, a whole number of blocks, as the traits'
// row functions do (row_kernels.h), so that a kernel list entry names it directly.
#pragma once

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "engine/formats/dequantize.h"  // BFloat16ToFloat, and DType

#define SUPERWEIGHT_DEQUANTIZE_AVX2 1

namespace superweight {
namespace {  // NOLINT(build/namespaces): one copy per including file, on purpose

inline float HalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline __m256 U8ToFloat(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
inline __m256 I8ToFloat(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

template <typename Sink>
void Q4_0Avx2(const uint8_t* b, int64_t n, typename Sink::Out* y) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m256 eight = _mm256_set1_ps(8.f);
  for (int64_t i = 0; i < n / 32; ++i, b += 18, y += 32) {
    const __m256 d = _mm256_set1_ps(HalfAt(b));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    Sink::Store8(_mm256_mul_ps(_mm256_sub_ps(U8ToFloat(lo), eight), d), y);
    Sink::Store8(_mm256_mul_ps(_mm256_sub_ps(U8ToFloat(_mm_srli_si128(lo, 8)), eight), d), y + 8);
    Sink::Store8(_mm256_mul_ps(_mm256_sub_ps(U8ToFloat(hi), eight), d), y + 16);
    Sink::Store8(_mm256_mul_ps(_mm256_sub_ps(U8ToFloat(_mm_srli_si128(hi, 8)), eight), d), y + 24);
  }
}

template <typename Sink>
void Q4_1Avx2(const uint8_t* b, int64_t n, typename Sink::Out* y) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / 32; ++i, b += 20, y += 32) {
    const __m256 d = _mm256_set1_ps(HalfAt(b)), m = _mm256_set1_ps(HalfAt(b + 2));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4));
    const __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    Sink::Store8(_mm256_fmadd_ps(U8ToFloat(lo), d, m), y);
    Sink::Store8(_mm256_fmadd_ps(U8ToFloat(_mm_srli_si128(lo, 8)), d, m), y + 8);
    Sink::Store8(_mm256_fmadd_ps(U8ToFloat(hi), d, m), y + 16);
    Sink::Store8(_mm256_fmadd_ps(U8ToFloat(_mm_srli_si128(hi, 8)), d, m), y + 24);
  }
}

template <typename Sink>
void Q8_0Avx2(const uint8_t* b, int64_t n, typename Sink::Out* y) {
  for (int64_t i = 0; i < n / 32; ++i, b += 34, y += 32) {
    const __m256 d = _mm256_set1_ps(HalfAt(b));
    for (int j = 0; j < 32; j += 8) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + j));
      Sink::Store8(_mm256_mul_ps(I8ToFloat(q), d), y + j);
    }
  }
}

template <typename Sink>
void F16Avx2(const uint8_t* src, int64_t n, typename Sink::Out* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    Sink::Store8(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))),
                 y + i);
  }
  for (; i < n; ++i) y[i] = Sink::Scalar(HalfAt(src + 2 * i));
}

// bf16 to f32 is a shift into the high half; to bf16 it is the sink's rounding of an exact value.
template <typename Sink>
void BF16Avx2(const uint8_t* src, int64_t n, typename Sink::Out* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    Sink::Store8(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)), y + i);
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    y[i] = Sink::Scalar(BFloat16ToFloat(h));
  }
}

// 32 bits spread over 32 bytes: byte i is 0xFF where bit i of bits is set, else 0.
inline __m256i BitsToByteMask(uint32_t bits) {
  // Byte i takes byte i / 8 of bits (the shuffle works within each 16-byte lane, and both lanes
  // hold all four bytes), then every bit but bit i % 8 is set: all ones exactly where bit i was.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i all_but_one = _mm256_set1_epi64x(0x7FBFDFEFF7FBFDFE);
  return _mm256_cmpeq_epi8(_mm256_or_si256(spread, all_but_one), _mm256_set1_epi8(-1));
}

// Q5_0 (q - 16) * d and Q5_1 q * d + m: element j's fifth bit is bit j of the block's qh. The
// products are exact in f32 (5 x 11 bits), as in the scalar loops.
template <typename Sink, bool kOffset>
void Q5Avx2(const uint8_t* b, int64_t n, typename Sink::Out* y) {
  constexpr int kBlockBytes = kOffset ? 24 : 22, kHigh = kOffset ? 4 : 2;
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m256i fifth_bit = _mm256_set1_epi8(0x10), bias = _mm256_set1_epi8(kOffset ? 0 : 16);
  for (int64_t i = 0; i < n / 32; ++i, b += kBlockBytes, y += 32) {
    const __m256 d = _mm256_set1_ps(HalfAt(b));
    const __m256 m = _mm256_set1_ps(kOffset ? HalfAt(b + 2) : 0.f);
    uint32_t qh;
    std::memcpy(&qh, b + kHigh, 4);
    const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kHigh + 4));
    const __m256i nibbles =
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low4), _mm_and_si128(qs, low4));
    const __m256i q = _mm256_sub_epi8(
        _mm256_or_si256(nibbles, _mm256_and_si256(BitsToByteMask(qh), fifth_bit)), bias);
    const __m128i halves[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
    for (int g = 0; g < 4; ++g) {
      const __m128i bytes = g % 2 == 0 ? halves[g / 2] : _mm_srli_si128(halves[g / 2], 8);
      const __m256 v = I8ToFloat(bytes);  // q - bias is within [-16, 31]: signed bytes
      Sink::Store8(kOffset ? _mm256_fmadd_ps(v, d, m) : _mm256_mul_ps(v, d), y + 8 * g);
    }
  }
}

// Q6_K: per 128 elements, 64 bytes of low nibbles and 32 of high bit pairs make four runs of 32
// six-bit quants; each 16 elements share an int8 scale. d * scale (11 x 8 bits) and its product
// with q - 32 (6 bits) are exact in f32, as in the scalar loop.
template <typename Sink>
void Q6_KAvx2(const uint8_t* b, int64_t n, typename Sink::Out* y) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < n / 256; ++i, b += 210) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = HalfAt(b + 208);
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
      // Byte lanes shifted as 16-bit words: the masks drop what crosses from the next byte.
      const __m256i nibbles[4] = {_mm256_and_si256(l0, low4), _mm256_and_si256(l1, low4),
                                  _mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                  _mm256_and_si256(_mm256_srli_epi16(l1, 4), low4)};
      for (int run = 0; run < 4; ++run) {
        const __m256i pair = _mm256_and_si256(_mm256_srli_epi16(h, 2 * run), low2);
        const __m256i q =
            _mm256_sub_epi8(_mm256_or_si256(nibbles[run], _mm256_slli_epi16(pair, 4)), bias);
        const __m128i halves[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
        for (int g = 0; g < 4; ++g) {  // eight elements at y[32 run + 8 g]
          const __m128i bytes = g % 2 == 0 ? halves[g / 2] : _mm_srli_si128(halves[g / 2], 8);
          const __m256 scale = _mm256_set1_ps(d * sc[2 * run + g / 2]);
          Sink::Store8(_mm256_mul_ps(I8ToFloat(bytes), scale), y + 32 * run + 8 * g);
        }
      }
    }
  }
}

}  // namespace
}  // namespace superweight

#endif  // AVX2, F16C, FMA
