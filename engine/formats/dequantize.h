// Conversion of stored elements to f32, bit-exact with llama.cpp's dequantize_row_* functions.
#pragma once

#include <cstdint>
#include <cstring>

#include "engine/formats/dtype.h"

namespace superweight {

float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t b);

// Round to nearest even, NaN made quiet, subnormals flushed to signed zero: what the AVX512-BF16
// conversion instruction does, so that every path gives the same bits. Inline and branch-free
// so conversion loops vectorize.
inline uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7F800000u) == 0) bits &= 0x80000000u;
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded);
}

// FloatToBFloat16(f) as a float: f rounded to bf16's precision (exact in f32).
inline float RoundToBFloat16Value(float f) {
  const uint32_t bits = uint32_t{FloatToBFloat16(f)} << 16;
  float r;
  std::memcpy(&r, &bits, 4);
  return r;
}

// Converts n elements (a whole number of blocks) starting at src into dst. Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0, Q6_K, F16 and BF16 go through AVX2 kernels where the build targets AVX2 (x86-64-v3),
// bit-exact with the scalar code. Each conversion below runs the kernel of the CPU class that
// CpuAllows() grants (row_kernels.h), or the type's traits (dtype.h) where no class has one.
void DequantizeRow(DType type, const uint8_t* src, int64_t n, float* dst);

// The same, rounded to bf16 (FloatToBFloat16 of each value), without a whole-row f32 copy.
void DequantizeRowToBFloat16(DType type, const uint8_t* src, int64_t n, uint16_t* dst);

// Block-quantized rows as exact integer codes: per group of 32 elements, a scale and an offset
// such that each element is scale * code + offset, the codes small integers (|code| <= 128, so
// exact in bf16) and scale and offset exact in f32. That is the value llama.cpp's
// dequantization computes before its one rounding to f32, so products of f32 activations with
// the codes, scaled per group, keep f32 accuracy. Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q5_K
// have this form (Q6_K's scales change every 16 elements).
bool HasBlockCodes(DType type);
// Whether a type's offsets can be nonzero (Q4_1, Q5_1, Q4_K, Q5_K).
bool BlockCodesHaveOffsets(DType type);
// Writes n codes (bf16) into codes and, for each group g of 32, scale[g * stride] and
// offset[g * stride]. type must have HasBlockCodes.
void DecodeRowToBlockCodes(DType type, const uint8_t* src, int64_t n, uint16_t* codes, float* scale,
                           float* offset, int64_t stride);

// The same, each value rounded to bf16 and held as a float (RoundToBFloat16Value): the operand of
// bf16 arithmetic done on f32 FMA units, where the CPU has no bf16 dot product.
void DequantizeRowToBFloat16Values(DType type, const uint8_t* src, int64_t n, float* dst);

// dst[i] = FloatToBFloat16(x[i]).
void FloatsToBFloat16(const float* x, int64_t n, uint16_t* dst);
// dst[i] = RoundToBFloat16Value(x[i]); dst may be x.
void FloatsToBFloat16Values(const float* x, int64_t n, float* dst);

namespace internal {
// The 6-bit scale and min of sub-block j (0-7) of a Q4_K/Q5_K super-block, packed in 12 bytes.
inline void KQuantScaleMin(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
    *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}
// The portable scalar loops (Traits(type).to_float, .to_block_codes); the reference the vector
// kernels are tested against.
void DequantizeRowScalar(DType type, const uint8_t* src, int64_t n, float* dst);
void DecodeRowToBlockCodesScalar(DType type, const uint8_t* src, int64_t n, uint16_t* codes,
                                 float* scale, float* offset, int64_t stride);
}  // namespace internal

}  // namespace superweight
