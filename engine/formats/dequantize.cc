#include "engine/formats/dequantize.h"

#include <algorithm>
#include <cstring>

#include "engine/formats/dequantize_kernels.h"
#include "engine/runtime/cpu.h"

namespace superweight {
namespace {

inline uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

void DequantQ4_0(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 18, y += 32) {
    const float d = HalfToFloat(Load16(b));
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
      y[j] = ((qs[j] & 0x0F) - 8) * d;
      y[j + 16] = ((qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantQ4_1(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 20, y += 32) {
    const float d = HalfToFloat(Load16(b));
    const float m = HalfToFloat(Load16(b + 2));
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) {
      y[j] = (qs[j] & 0x0F) * d + m;
      y[j + 16] = (qs[j] >> 4) * d + m;
    }
  }
}

void DequantQ5_0(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 22, y += 32) {
    const float d = HalfToFloat(Load16(b));
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    const uint8_t* qs = b + 6;
    for (int j = 0; j < 16; ++j) {
      const uint8_t xh0 = ((qh >> j) << 4) & 0x10;
      const uint8_t xh1 = (qh >> (j + 12)) & 0x10;
      y[j] = (((qs[j] & 0x0F) | xh0) - 16) * d;
      y[j + 16] = (((qs[j] >> 4) | xh1) - 16) * d;
    }
  }
}

void DequantQ5_1(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 24, y += 32) {
    const float d = HalfToFloat(Load16(b));
    const float m = HalfToFloat(Load16(b + 2));
    uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    const uint8_t* qs = b + 8;
    for (int j = 0; j < 16; ++j) {
      const uint8_t xh0 = ((qh >> j) << 4) & 0x10;
      const uint8_t xh1 = (qh >> (j + 12)) & 0x10;
      y[j] = ((qs[j] & 0x0F) | xh0) * d + m;
      y[j + 16] = ((qs[j] >> 4) | xh1) * d + m;
    }
  }
}

void DequantQ8_0(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 34, y += 32) {
    const float d = HalfToFloat(Load16(b));
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
    for (int j = 0; j < 32; ++j) y[j] = qs[j] * d;
  }
}

void DequantQ4_K(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 144) {
    const float d = HalfToFloat(Load16(b));
    const float dmin = HalfToFloat(Load16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    int is = 0;
    for (int j = 0; j < 256; j += 64) {
      uint8_t sc, m;
      internal::KQuantScaleMin(is + 0, scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      internal::KQuantScaleMin(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

void DequantQ5_K(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 176) {
    const float d = HalfToFloat(Load16(b));
    const float dmin = HalfToFloat(Load16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + 48;
    int is = 0;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 256; j += 64) {
      uint8_t sc, m;
      internal::KQuantScaleMin(is + 0, scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      internal::KQuantScaleMin(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      is += 2;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

void DequantQ6_K(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 210) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = HalfToFloat(Load16(b + 208));
    for (int n = 0; n < 256; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 = static_cast<int8_t>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int8_t q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int8_t q3 = static_cast<int8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int8_t q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

// Codes: integers up to 128 in magnitude, whose bf16 is exact: the high half of the float,
// with no rounding to do (branch-free, so the loops vectorize).
inline uint16_t CodeOf(int q) {
  const float f = static_cast<float>(q);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// The 32-element block formats: `bias` is subtracted from the stored q (Q4_0, Q5_0), the
// offset is the block's m where it has one (Q4_1, Q5_1).
template <int kBlockBytes, int kBits, int kBias, bool kOffset>
void CodesQ45(const uint8_t* b, int64_t blocks, uint16_t* codes, float* scale, float* offset,
              int64_t stride) {
  for (int64_t i = 0; i < blocks; ++i, b += kBlockBytes, codes += 32) {
    scale[i * stride] = HalfToFloat(Load16(b));
    offset[i * stride] = kOffset ? HalfToFloat(Load16(b + 2)) : 0.f;
    const uint8_t* p = b + (kOffset ? 4 : 2);
    uint32_t qh = 0;
    if (kBits == 5) {
      std::memcpy(&qh, p, 4);
      p += 4;
    }
    for (int j = 0; j < 16; ++j) {
      const int high0 = kBits == 5 ? ((qh >> j) << 4) & 0x10 : 0;
      const int high1 = kBits == 5 ? (qh >> (j + 12)) & 0x10 : 0;
      codes[j] = CodeOf(((p[j] & 0x0F) | high0) - kBias);
      codes[j + 16] = CodeOf(((p[j] >> 4) | high1) - kBias);
    }
  }
}

void CodesQ8_0(const uint8_t* b, int64_t blocks, uint16_t* codes, float* scale, float* offset,
               int64_t stride) {
  for (int64_t i = 0; i < blocks; ++i, b += 34, codes += 32) {
    scale[i * stride] = HalfToFloat(Load16(b));
    offset[i * stride] = 0.f;
    for (int j = 0; j < 32; ++j) codes[j] = CodeOf(static_cast<int8_t>(b[2 + j]));
  }
}

// Q4_K and Q5_K: 256-element super-blocks of eight 32-element groups, each d * sc (exact: 11 x 6
// bits) times q minus dmin * m (exact too), as DequantQ4_K/DequantQ5_K compute them.
template <bool kFiveBits>
void CodesK(const uint8_t* b, int64_t blocks, uint16_t* codes, float* scale, float* offset,
            int64_t stride) {
  for (int64_t i = 0; i < blocks; ++i, b += kFiveBits ? 176 : 144) {
    const float d = HalfToFloat(Load16(b));
    const float dmin = HalfToFloat(Load16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* q = b + (kFiveBits ? 48 : 16);
    for (int group = 0; group < 8; group += 2, q += 32) {
      for (int half = 0; half < 2; ++half, codes += 32) {
        uint8_t sc, m;
        internal::KQuantScaleMin(group + half, scales, &sc, &m);
        const int64_t g = i * 8 + group + half;
        scale[g * stride] = d * sc;
        offset[g * stride] = -(dmin * m);
        const int shift = half * 4;
        const uint8_t high_bit = static_cast<uint8_t>(1u << (group + half));
        for (int l = 0; l < 32; ++l) {
          const int high = kFiveBits && (qh[l] & high_bit) != 0 ? 16 : 0;
          codes[l] = CodeOf(((q[l] >> shift) & 0xF) + high);
        }
      }
    }
  }
}

}  // namespace

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3FF;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {  // infinity, or a NaN made quiet as the F16C instruction does
    bits = sign | 0x7F800000u | (mant << 13) | (mant != 0 ? 0x400000u : 0u);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float BFloat16ToFloat(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace internal {

void DequantizeRowScalar(DType type, const uint8_t* src, int64_t n, float* dst) {
  const int64_t blocks = n / Traits(type).block_elements;
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(Load16(src + 2 * i));
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = BFloat16ToFloat(Load16(src + 2 * i));
      return;
    case DType::kQ4_0:
      return DequantQ4_0(src, blocks, dst);
    case DType::kQ4_1:
      return DequantQ4_1(src, blocks, dst);
    case DType::kQ5_0:
      return DequantQ5_0(src, blocks, dst);
    case DType::kQ5_1:
      return DequantQ5_1(src, blocks, dst);
    case DType::kQ8_0:
      return DequantQ8_0(src, blocks, dst);
    case DType::kQ4_K:
      return DequantQ4_K(src, blocks, dst);
    case DType::kQ5_K:
      return DequantQ5_K(src, blocks, dst);
    case DType::kQ6_K:
      return DequantQ6_K(src, blocks, dst);
  }
}

void DecodeRowToBlockCodesScalar(DType type, const uint8_t* src, int64_t n, uint16_t* codes,
                                 float* scale, float* offset, int64_t stride) {
  switch (type) {
    case DType::kQ4_0:
      return CodesQ45<18, 4, 8, false>(src, n / 32, codes, scale, offset, stride);
    case DType::kQ4_1:
      return CodesQ45<20, 4, 0, true>(src, n / 32, codes, scale, offset, stride);
    case DType::kQ5_0:
      return CodesQ45<22, 5, 16, false>(src, n / 32, codes, scale, offset, stride);
    case DType::kQ5_1:
      return CodesQ45<24, 5, 0, true>(src, n / 32, codes, scale, offset, stride);
    case DType::kQ8_0:
      return CodesQ8_0(src, n / 32, codes, scale, offset, stride);
    case DType::kQ4_K:
      return CodesK<false>(src, n / 256, codes, scale, offset, stride);
    case DType::kQ5_K:
      return CodesK<true>(src, n / 256, codes, scale, offset, stride);
    default:
      return;  // no codes form: HasBlockCodes said so
  }
}

}  // namespace internal

#ifdef SUPERWEIGHT_DEQUANTIZE_AVX2
namespace {

struct SinkF32 {
  using Out = float;
  static void Store8(__m256 v, float* y) { _mm256_storeu_ps(y, v); }
  static float Scalar(float f) { return f; }
};

// FloatToBFloat16 on eight lanes, in AVX2 arithmetic.
struct SinkBF16 {
  using Out = uint16_t;
  static void Store8(__m256 v, uint16_t* y) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb)), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, quiet, nan);
    // Subnormals (exponent bits all zero) become signed zero.
    const __m256i exponent = _mm256_and_si256(bits, _mm256_set1_epi32(0x7F800000));
    const __m256i subnormal = _mm256_cmpeq_epi32(exponent, _mm256_setzero_si256());
    r = _mm256_blendv_epi8(
        r, _mm256_srli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(INT32_MIN)), 16), subnormal);
    const __m128i packed =
        _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y), packed);
  }
  static uint16_t Scalar(float f) { return FloatToBFloat16(f); }
};

}  // namespace

namespace internal {
// In dequantize_avx512bf16.cc, built for AVX512-BF16; called only where the CPU has it.
bool DequantizeToBFloat16Avx512(DType type, const uint8_t* src, int64_t n, uint16_t* dst);
void FloatsToBFloat16Avx512(const float* x, int64_t n, uint16_t* dst);
bool DecodeToBlockCodesAvx512(DType type, const uint8_t* src, int64_t n, uint16_t* codes,
                              float* scale, float* offset, int64_t stride);
}  // namespace internal

namespace {
bool HasAvx512Bf16() { return CpuAllows(Isa::kAvx512Bf16); }
}  // namespace
#endif  // SUPERWEIGHT_DEQUANTIZE_AVX2

void DequantizeRow(DType type, const uint8_t* src, int64_t n, float* dst) {
#ifdef SUPERWEIGHT_DEQUANTIZE_AVX2
  if (DequantizeAvx2<SinkF32>(type, src, n, dst)) return;
#endif
  internal::DequantizeRowScalar(type, src, n, dst);
}

void FloatsToBFloat16(const float* x, int64_t n, uint16_t* dst) {
  int64_t i = 0;
#ifdef SUPERWEIGHT_DEQUANTIZE_AVX2
  if (HasAvx512Bf16()) return internal::FloatsToBFloat16Avx512(x, n, dst);
  for (; i + 8 <= n; i += 8) SinkBF16::Store8(_mm256_loadu_ps(x + i), dst + i);
#endif
  for (; i < n; ++i) dst[i] = FloatToBFloat16(x[i]);
}

void FloatsToBFloat16Values(const float* x, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = RoundToBFloat16Value(x[i]);
}

void DequantizeRowToBFloat16Values(DType type, const uint8_t* src, int64_t n, float* dst) {
  DequantizeRow(type, src, n, dst);
  if (type != DType::kBF16) FloatsToBFloat16Values(dst, n, dst);
}

void DequantizeRowToBFloat16(DType type, const uint8_t* src, int64_t n, uint16_t* dst) {
  if (type == DType::kBF16) {
    std::memcpy(dst, src, n * sizeof(uint16_t));
    return;
  }
  if (type == DType::kF32) {
    FloatsToBFloat16(reinterpret_cast<const float*>(src), n, dst);
    return;
  }
#ifdef SUPERWEIGHT_DEQUANTIZE_AVX2
  if (HasAvx512Bf16() ? internal::DequantizeToBFloat16Avx512(type, src, n, dst)
                      : DequantizeAvx2<SinkBF16>(type, src, n, dst)) {
    return;
  }
#endif
  // Through f32, a few blocks at a time in a buffer that stays in L1.
  const DTypeTraits& t = Traits(type);
  const int64_t chunk = std::max<int64_t>(1, 1024 / t.block_elements) * t.block_elements;
  float buffer[1024];
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t count = std::min(chunk, n - i);
    DequantizeRow(type, src + i / t.block_elements * t.block_bytes, count, buffer);
    FloatsToBFloat16(buffer, count, dst + i);
  }
}

bool HasBlockCodes(DType type) {
  switch (type) {
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
      return true;
    default:
      return false;
  }
}

bool BlockCodesHaveOffsets(DType type) {
  return type == DType::kQ4_1 || type == DType::kQ5_1 || type == DType::kQ4_K ||
         type == DType::kQ5_K;
}

void DecodeRowToBlockCodes(DType type, const uint8_t* src, int64_t n, uint16_t* codes, float* scale,
                           float* offset, int64_t stride) {
#ifdef SUPERWEIGHT_DEQUANTIZE_AVX2
  if (HasAvx512Bf16() &&
      internal::DecodeToBlockCodesAvx512(type, src, n, codes, scale, offset, stride)) {
    return;
  }
#endif
  internal::DecodeRowToBlockCodesScalar(type, src, n, codes, scale, offset, stride);
}

}  // namespace superweight
