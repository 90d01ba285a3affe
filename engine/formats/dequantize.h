// Conversion of stored elements to f32, bit-exact with llama.cpp's dequantize_row_* functions.
#pragma once

#include <cstdint>
#include <cstring>

#include "engine/formats/dtype.h"

namespace superweight {

float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t b);

// Round to nearest even, NaN kept quiet. Inline and branch-free so conversion loops vectorize.
inline uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded);
}

// Converts n elements (a whole number of blocks) starting at src into dst.
void DequantizeRow(DType type, const uint8_t* src, int64_t n, float* dst);

}  // namespace superweight
