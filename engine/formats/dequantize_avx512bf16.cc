// bf16 conversion with the AVX512-BF16 instructions (VCVTNEPS2BF16: round to nearest even,
// NaNs made quiet, subnormals flushed to signed zero: FloatToBFloat16's contract). Built with
// -mavx512bf16; dequantize.cc calls into it only where the CPU reports the feature.
#include "engine/formats/dequantize.h"
#include "engine/formats/dequantize_kernels.h"

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

}  // namespace

namespace internal {

bool DequantizeToBFloat16Avx512(DType type, const uint8_t* src, int64_t n, uint16_t* dst) {
  return DequantizeAvx2<SinkBF16Avx512>(type, src, n, dst);
}

void FloatsToBFloat16Avx512(const float* x, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(dst + i, reinterpret_cast<__m512i>(v));
  }
  for (; i + 8 <= n; i += 8) SinkBF16Avx512::Store8(_mm256_loadu_ps(x + i), dst + i);
  for (; i < n; ++i) dst[i] = FloatToBFloat16(x[i]);
}

}  // namespace internal
}  // namespace superweight
#endif
