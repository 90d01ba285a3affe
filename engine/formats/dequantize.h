// Conversion of stored elements to f32, bit-exact with llama.cpp's dequantize_row_* functions.
#pragma once

#include <cstdint>

#include "engine/formats/dtype.h"

namespace superweight {

float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);  // round to nearest even, NaN kept

// Converts n elements (a whole number of blocks) starting at src into dst.
void DequantizeRow(DType type, const uint8_t* src, int64_t n, float* dst);

}  // namespace superweight
