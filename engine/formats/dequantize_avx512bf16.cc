// bf16 conversion with the AVX512-BF16 instructions (VCVTNEPS2BF16: round to nearest even,
// NaNs made quiet, subnormals flushed to signed zero: FloatToBFloat16's contract). Built with
// -mavx512bf16; dequantize.cc calls into it only where the CPU reports the feature, through the
// kernel list at the end.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source, which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "absl/types/span.h"
#include "engine/formats/dequantize.h"
#include "engine/formats/dequantize_kernels.h"
#include "engine/formats/row_kernels.h"

#if defined(SUPERWEIGHT_DEQUANTIZE_AVX2) && defined(__AVX512BF16__) && defined(__AVX512VL__)
namespace superweight {
namespace {

struct SinkBF16Avx512 {
  using Out = uint16_t;
  static void Store8(__m256 v, uint16_t* y) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y),
                     reinterpret_cast<__m128i>(_mm256_cvtneps_pbh(v)));
  }
  static uint16_t Scalar(float f) { return FloatToBFloat16(f); }
};

// A block of 32 as two halves of 16 floats, rounded together and stored in one 64-byte write.
inline void StoreBlock(__m512 first, __m512 second, uint16_t* y) {
  _mm512_storeu_si512(y, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(second, first)));
}
inline __m512 U8ToFloat16(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }
inline __m512 I8ToFloat16(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)); }

// The block formats the AMX kernel dequantizes most (SmolLM2's Q4_1 layers and Q8_0 embedding,
// Q4_0 files): a whole block per iteration in 16-lane registers, half the instructions of the
// eight-lane kernels. The arithmetic is theirs (dequantize_kernels.h: bit-exact).
void Q4_0Block16(const uint8_t* b, int64_t n, uint16_t* y) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m512 eight = _mm512_set1_ps(8.f);
  for (int64_t i = 0; i < n / 32; ++i, b += 18, y += 32) {
    const __m512 d = _mm512_set1_ps(HalfAt(b));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    StoreBlock(_mm512_mul_ps(_mm512_sub_ps(U8ToFloat16(lo), eight), d),
               _mm512_mul_ps(_mm512_sub_ps(U8ToFloat16(hi), eight), d), y);
  }
}

void Q4_1Block16(const uint8_t* b, int64_t n, uint16_t* y) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / 32; ++i, b += 20, y += 32) {
    const __m512 d = _mm512_set1_ps(HalfAt(b)), m = _mm512_set1_ps(HalfAt(b + 2));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4));
    const __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    StoreBlock(_mm512_fmadd_ps(U8ToFloat16(lo), d, m), _mm512_fmadd_ps(U8ToFloat16(hi), d, m), y);
  }
}

void Q8_0Block16(const uint8_t* b, int64_t n, uint16_t* y) {
  for (int64_t i = 0; i < n / 32; ++i, b += 34, y += 32) {
    const __m512 d = _mm512_set1_ps(HalfAt(b));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
    StoreBlock(_mm512_mul_ps(I8ToFloat16(q0), d), _mm512_mul_ps(I8ToFloat16(q1), d), y);
  }
}

// Codes (HasBlockCodes): the nibbles of a Q4 block widened to 32 words and looked up in a table
// of their bf16 values (q - bias), one permute for the block.
template <int kBlockBytes, bool kOffset>
void Q4Codes16(const uint8_t* b, int64_t n, uint16_t* codes, float* scale, float* offset,
               int64_t stride) {
  alignas(64) uint16_t table[32];
  for (int q = 0; q < 32; ++q) table[q] = FloatToBFloat16(static_cast<float>(kOffset ? q : q - 8));
  const __m512i bf16_of = _mm512_load_si512(table);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / 32; ++i, b += kBlockBytes, codes += 32) {
    scale[i * stride] = HalfAt(b);
    offset[i * stride] = kOffset ? HalfAt(b + 2) : 0.f;
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (kOffset ? 4 : 2)));
    const __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    const __m512i words = _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo));
    _mm512_storeu_si512(codes, _mm512_permutexvar_epi16(words, bf16_of));
  }
}

// Q5_0/Q5_1 codes the same way: the fifth bits from BitsToByteMask, then the table.
template <bool kOffset>
void Q5Codes16(const uint8_t* b, int64_t n, uint16_t* codes, float* scale, float* offset,
               int64_t stride) {
  constexpr int kBlockBytes = kOffset ? 24 : 22, kHigh = kOffset ? 4 : 2;
  alignas(64) uint16_t table[32];
  for (int q = 0; q < 32; ++q) table[q] = FloatToBFloat16(static_cast<float>(kOffset ? q : q - 16));
  const __m512i bf16_of = _mm512_load_si512(table);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m256i fifth_bit = _mm256_set1_epi8(0x10);
  for (int64_t i = 0; i < n / 32; ++i, b += kBlockBytes, codes += 32) {
    scale[i * stride] = HalfAt(b);
    offset[i * stride] = kOffset ? HalfAt(b + 2) : 0.f;
    uint32_t qh;
    std::memcpy(&qh, b + kHigh, 4);
    const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kHigh + 4));
    const __m256i nibbles =
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low4), _mm_and_si128(qs, low4));
    const __m256i q = _mm256_or_si256(nibbles, _mm256_and_si256(BitsToByteMask(qh), fifth_bit));
    _mm512_storeu_si512(codes, _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(q), bf16_of));
  }
}

// Q4_K/Q5_K: each 32-element group's quants as 32 bytes, with its scale d * sc and offset
// -(dmin * m) (both exact in f32), handed to group(q, scale, offset) in order.
template <bool kFiveBits, typename Group>
void ForEachKGroup(const uint8_t* b, int64_t blocks, Group&& group) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < blocks; ++i, b += kFiveBits ? 176 : 144) {
    const float d = HalfAt(b), dmin = HalfAt(b + 2);
    const uint8_t* scales = b + 4;
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    const uint8_t* qs = b + (kFiveBits ? 48 : 16);
    for (int pair = 0; pair < 4; ++pair, qs += 32) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
      for (int half = 0; half < 2; ++half) {
        const int g = 2 * pair + half;
        __m256i v = _mm256_and_si256(half == 0 ? q : _mm256_srli_epi16(q, 4), low4);
        if (kFiveBits) {  // bit g of each qh byte is the fifth bit of group g's element
          const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(qh, g), one);
          v = _mm256_or_si256(v, _mm256_slli_epi16(bit, 4));
        }
        uint8_t sc, m;
        internal::KQuantScaleMin(g, scales, &sc, &m);
        group(v, d * sc, -(dmin * m));
      }
    }
  }
}

// d1 * q - m1 per element, as Q4_KToFloat/Q5_KToFloat compute it (the product is exact, so
// the fused multiply-add rounds as they do).
template <bool kFiveBits>
void KQuantBlock16(const uint8_t* b, int64_t n, uint16_t* y) {
  ForEachKGroup<kFiveBits>(b, n / 256, [&](__m256i q, float scale, float offset) {
    const __m512 d = _mm512_set1_ps(scale), o = _mm512_set1_ps(offset);
    StoreBlock(_mm512_fmadd_ps(U8ToFloat16(_mm256_castsi256_si128(q)), d, o),
               _mm512_fmadd_ps(U8ToFloat16(_mm256_extracti128_si256(q, 1)), d, o), y);
    y += 32;
  });
}

template <bool kFiveBits>
void KQuantCodes16(const uint8_t* b, int64_t n, uint16_t* codes, float* scale, float* offset,
                   int64_t stride) {
  alignas(64) uint16_t table[32];
  for (int q = 0; q < 32; ++q) table[q] = FloatToBFloat16(static_cast<float>(q));
  const __m512i bf16_of = _mm512_load_si512(table);
  int64_t g = 0;
  ForEachKGroup<kFiveBits>(b, n / 256, [&](__m256i q, float group_scale, float group_offset) {
    scale[g * stride] = group_scale;
    offset[g * stride] = group_offset;
    _mm512_storeu_si512(codes + 32 * g, _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(q), bf16_of));
    ++g;
  });
}

void Q8_0Codes16(const uint8_t* b, int64_t n, uint16_t* codes, float* scale, float* offset,
                 int64_t stride) {
  for (int64_t i = 0; i < n / 32; ++i, b += 34, codes += 32) {
    scale[i * stride] = HalfAt(b);
    offset[i * stride] = 0.f;
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
    StoreBlock(I8ToFloat16(q0), I8ToFloat16(q1), codes);
  }
}

void F32ToBFloat16Avx512(const uint8_t* src, int64_t n, uint16_t* dst) {
  const float* x = reinterpret_cast<const float*>(src);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(dst + i, reinterpret_cast<__m512i>(v));
  }
  for (; i + 8 <= n; i += 8) SinkBF16Avx512::Store8(_mm256_loadu_ps(x + i), dst + i);
  for (; i < n; ++i) dst[i] = FloatToBFloat16(x[i]);
}

// The AVX512-BF16 class's kernels, over the AVX2 class's: to f32 is AVX2's for every type (no
// rounding for the instruction to do); to bf16 and to block codes are these. The eight-lane
// kernels serve here with this class's rounding store.
constexpr internal::TypeKernels kAvx512Bf16Kernels[] = {
    {DType::kF32, {nullptr, F32ToBFloat16Avx512, nullptr}},
    {DType::kF16, {nullptr, F16Avx2<SinkBF16Avx512>, nullptr}},
    {DType::kQ4_0, {nullptr, Q4_0Block16, Q4Codes16<18, false>}},
    {DType::kQ4_1, {nullptr, Q4_1Block16, Q4Codes16<20, true>}},
    {DType::kQ5_0, {nullptr, Q5Avx2<SinkBF16Avx512, false>, Q5Codes16<false>}},
    {DType::kQ5_1, {nullptr, Q5Avx2<SinkBF16Avx512, true>, Q5Codes16<true>}},
    {DType::kQ8_0, {nullptr, Q8_0Block16, Q8_0Codes16}},
    {DType::kQ4_K, {nullptr, KQuantBlock16<false>, KQuantCodes16<false>}},
    {DType::kQ5_K, {nullptr, KQuantBlock16<true>, KQuantCodes16<true>}},
    {DType::kQ6_K, {nullptr, Q6_KAvx2<SinkBF16Avx512>, nullptr}},
};

}  // namespace

absl::Span<const internal::TypeKernels> internal::Avx512Bf16Kernels() { return kAvx512Bf16Kernels; }

}  // namespace superweight
#endif
