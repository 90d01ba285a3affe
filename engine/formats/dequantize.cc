#include "engine/formats/dequantize.h"

#include <algorithm>
#include <cstring>

#include "absl/types/span.h"
#include "engine/formats/dequantize_kernels.h"
#include "engine/formats/row_kernels.h"
#include "engine/runtime/cpu.h"

namespace superweight {
namespace {

inline uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
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
// bits) times q minus dmin * m (exact too), as Q4_KToFloat/Q5_KToFloat compute them.
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

void F32ToFloat(const uint8_t* src, int64_t n, float* dst) {
  std::memcpy(dst, src, n * sizeof(float));
}

void F16ToFloat(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(Load16(src + 2 * i));
}

void BF16ToFloat(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = BFloat16ToFloat(Load16(src + 2 * i));
}

void Q4_0ToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 32; ++i, b += 18, y += 32) {
    const float d = HalfToFloat(Load16(b));
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
      y[j] = ((qs[j] & 0x0F) - 8) * d;
      y[j + 16] = ((qs[j] >> 4) - 8) * d;
    }
  }
}

void Q4_1ToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 32; ++i, b += 20, y += 32) {
    const float d = HalfToFloat(Load16(b));
    const float m = HalfToFloat(Load16(b + 2));
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) {
      y[j] = (qs[j] & 0x0F) * d + m;
      y[j + 16] = (qs[j] >> 4) * d + m;
    }
  }
}

void Q5_0ToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 32; ++i, b += 22, y += 32) {
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

void Q5_1ToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 32; ++i, b += 24, y += 32) {
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

void Q8_0ToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 32; ++i, b += 34, y += 32) {
    const float d = HalfToFloat(Load16(b));
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
    for (int j = 0; j < 32; ++j) y[j] = qs[j] * d;
  }
}

void Q4_KToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 256; ++i, b += 144) {
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

void Q5_KToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 256; ++i, b += 176) {
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

void Q6_KToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 256; ++i, b += 210) {
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

// Q2_K: 84-byte super-blocks: 16 scale bytes (low nibble the sub-block's scale, high its min,
// against d and dmin), 64 bytes of 2-bit codes (four 32-value runs per 128, one bit pair each),
// d, dmin.
void Q2_KToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 256; ++i, b += 84) {
    const uint8_t* scales = b;
    const uint8_t* q = b + 16;
    const float d = HalfToFloat(Load16(b + 80));
    const float min = HalfToFloat(Load16(b + 82));
    int is = 0;
    for (int n = 0; n < 256; n += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 32; half += 16) {
          const uint8_t sc = scales[is++];
          const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * ((q[half + l] >> shift) & 3) - ml;
        }
      }
    }
  }
}

// Q3_K: 110-byte super-blocks: 32 bytes of high bits (a clear bit subtracts 4), 64 bytes of
// 2-bit codes laid out as Q2_K's, twelve bytes of sixteen 6-bit scales (stored + 32), d.
void Q3_KToFloat(const uint8_t* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n / 256; ++i, b += 110) {
    const uint8_t* hm = b;
    const uint8_t* q = b + 32;
    const uint8_t* packed = b + 96;
    const float d_all = HalfToFloat(Load16(b + 108));
    int8_t scales[16];
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
      const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
      scales[j] = static_cast<int8_t>((low | (high << 4)) - 32);
    }
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < 256; n += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int half = 0; half < 32; half += 16) {
          const float dl = d_all * scales[is++];
          for (int l = 0; l < 16; ++l) {
            const int code = ((q[half + l] >> shift) & 3) - ((hm[half + l] & m) ? 0 : 4);
            *y++ = dl * code;
          }
        }
      }
    }
  }
}

void F32ToBFloat16(const uint8_t* src, int64_t n, uint16_t* dst) {
  const float* x = reinterpret_cast<const float*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = FloatToBFloat16(x[i]);
}

// bf16 storage is already the answer: copied, subnormals and NaN payloads kept.
void BF16ToBFloat16(const uint8_t* src, int64_t n, uint16_t* dst) {
  std::memcpy(dst, src, n * sizeof(uint16_t));
}

void Q4_0ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride) {
  CodesQ45<18, 4, 8, false>(src, n / 32, codes, scale, offset, stride);
}
void Q4_1ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride) {
  CodesQ45<20, 4, 0, true>(src, n / 32, codes, scale, offset, stride);
}
void Q5_0ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride) {
  CodesQ45<22, 5, 16, false>(src, n / 32, codes, scale, offset, stride);
}
void Q5_1ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride) {
  CodesQ45<24, 5, 0, true>(src, n / 32, codes, scale, offset, stride);
}
void Q8_0ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride) {
  CodesQ8_0(src, n / 32, codes, scale, offset, stride);
}
void Q4_KToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride) {
  CodesK<false>(src, n / 256, codes, scale, offset, stride);
}
void Q5_KToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride) {
  CodesK<true>(src, n / 256, codes, scale, offset, stride);
}

void DequantizeRowScalar(DType type, const uint8_t* src, int64_t n, float* dst) {
  Traits(type).to_float(src, n, dst);
}

void DecodeRowToBlockCodesScalar(DType type, const uint8_t* src, int64_t n, uint16_t* codes,
                                 float* scale, float* offset, int64_t stride) {
  // A type without a codes form writes nothing: HasBlockCodes said so.
  if (ToBlockCodesFn decode = Traits(type).to_block_codes) {
    decode(src, n, codes, scale, offset, stride);
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

void F32ToBFloat16Avx2(const uint8_t* src, int64_t n, uint16_t* dst) {
  const float* x = reinterpret_cast<const float*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) SinkBF16::Store8(_mm256_loadu_ps(x + i), dst + i);
  for (; i < n; ++i) dst[i] = FloatToBFloat16(x[i]);
}

// The AVX2 class's kernels, the build's baseline. F32 to f32 stays a copy and BF16 to bf16 the
// traits' copy; the K-quants Q4_K and Q5_K go to bf16 through f32 (no AVX2 kernel of theirs).
constexpr internal::TypeKernels kAvx2Kernels[] = {
    {DType::kF32, {nullptr, F32ToBFloat16Avx2, nullptr}},
    {DType::kF16, {F16Avx2<SinkF32>, F16Avx2<SinkBF16>, nullptr}},
    {DType::kBF16, {BF16Avx2<SinkF32>, nullptr, nullptr}},
    {DType::kQ4_0, {Q4_0Avx2<SinkF32>, Q4_0Avx2<SinkBF16>, nullptr}},
    {DType::kQ4_1, {Q4_1Avx2<SinkF32>, Q4_1Avx2<SinkBF16>, nullptr}},
    {DType::kQ5_0, {Q5Avx2<SinkF32, false>, Q5Avx2<SinkBF16, false>, nullptr}},
    {DType::kQ5_1, {Q5Avx2<SinkF32, true>, Q5Avx2<SinkBF16, true>, nullptr}},
    {DType::kQ8_0, {Q8_0Avx2<SinkF32>, Q8_0Avx2<SinkBF16>, nullptr}},
    {DType::kQ6_K, {Q6_KAvx2<SinkF32>, Q6_KAvx2<SinkBF16>, nullptr}},
};

}  // namespace
#endif  // SUPERWEIGHT_DEQUANTIZE_AVX2

namespace {

// The kernel tables, one per CPU class with kernels of its own, each a superset of the one
// before: cpu.h's classes map onto them (AVX-512 without BF16 has none beyond AVX2's; AMX's
// tiles are the matmul's, not dequantization's).
enum KernelLevel : int { kReferenceLevel, kAvx2Level, kAvx512Bf16Level, kLevelCount };

struct KernelTables {
  internal::RowKernels at[kLevelCount][kDTypeCount];
};

// Each level starts from the one below and takes the members its list sets: resolved once, so a
// call is one lookup.
KernelTables ResolveKernelTables() {
  absl::Span<const internal::TypeKernels> lists[kLevelCount] = {};
#ifdef SUPERWEIGHT_DEQUANTIZE_AVX2
  lists[kAvx2Level] = kAvx2Kernels;
  lists[kAvx512Bf16Level] = internal::Avx512Bf16Kernels();
#endif
  KernelTables tables;
  for (int t = 0; t < kDTypeCount; ++t) {
    const DTypeTraits& traits = Traits(static_cast<DType>(t));
    tables.at[kReferenceLevel][t] = {traits.to_float, traits.to_bf16, traits.to_block_codes};
  }
  for (int level = kReferenceLevel + 1; level < kLevelCount; ++level) {
    for (int t = 0; t < kDTypeCount; ++t) tables.at[level][t] = tables.at[level - 1][t];
    for (const internal::TypeKernels& entry : lists[level]) {
      internal::RowKernels& kernels = tables.at[level][static_cast<int>(entry.type)];
      if (entry.kernels.to_float != nullptr) kernels.to_float = entry.kernels.to_float;
      if (entry.kernels.to_bf16 != nullptr) kernels.to_bf16 = entry.kernels.to_bf16;
      if (entry.kernels.to_block_codes != nullptr) {
        kernels.to_block_codes = entry.kernels.to_block_codes;
      }
    }
  }
  return tables;
}

// The table of the class CpuAllows() grants now (read per call: tests lower the ceiling within
// one process).
const internal::RowKernels* ActiveKernelTable() {
  static const KernelTables tables = ResolveKernelTables();
#ifdef SUPERWEIGHT_DEQUANTIZE_AVX2
  return tables.at[CpuAllows(Isa::kAvx512Bf16) ? kAvx512Bf16Level : kAvx2Level];
#else
  return tables.at[kReferenceLevel];
#endif
}

}  // namespace

void DequantizeRow(DType type, const uint8_t* src, int64_t n, float* dst) {
  ActiveKernelTable()[static_cast<int>(type)].to_float(src, n, dst);
}

void FloatsToBFloat16(const float* x, int64_t n, uint16_t* dst) {
  ActiveKernelTable()[static_cast<int>(DType::kF32)].to_bf16(reinterpret_cast<const uint8_t*>(x), n,
                                                             dst);
}

void FloatsToBFloat16Values(const float* x, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = RoundToBFloat16Value(x[i]);
}

void DequantizeRowToBFloat16Values(DType type, const uint8_t* src, int64_t n, float* dst) {
  DequantizeRow(type, src, n, dst);
  if (type != DType::kBF16) FloatsToBFloat16Values(dst, n, dst);
}

void DequantizeRowToBFloat16(DType type, const uint8_t* src, int64_t n, uint16_t* dst) {
  const internal::RowKernels* table = ActiveKernelTable();
  const internal::RowKernels& kernels = table[static_cast<int>(type)];
  if (kernels.to_bf16 != nullptr) return kernels.to_bf16(src, n, dst);
  // Through f32, a few blocks at a time in a buffer that stays in L1.
  const ToBFloat16Fn floats_to_bf16 = table[static_cast<int>(DType::kF32)].to_bf16;
  const DTypeTraits& t = Traits(type);
  const int64_t chunk = std::max<int64_t>(1, 1024 / t.block_elements) * t.block_elements;
  float buffer[1024];
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t count = std::min(chunk, n - i);
    kernels.to_float(src + i / t.block_elements * t.block_bytes, count, buffer);
    floats_to_bf16(reinterpret_cast<const uint8_t*>(buffer), count, dst + i);
  }
}

bool HasBlockCodes(DType type) { return Traits(type).to_block_codes != nullptr; }

bool BlockCodesHaveOffsets(DType type) { return Traits(type).block_codes_have_offsets; }

void DecodeRowToBlockCodes(DType type, const uint8_t* src, int64_t n, uint16_t* codes, float* scale,
                           float* offset, int64_t stride) {
  // A type without a codes form writes nothing: HasBlockCodes said so.
  if (ToBlockCodesFn decode = ActiveKernelTable()[static_cast<int>(type)].to_block_codes) {
    decode(src, n, codes, scale, offset, stride);
  }
}

}  // namespace superweight
