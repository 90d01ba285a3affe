// The row functions behind the dtype traits (dtype.cc), and the per-ISA vector kernels that
// stand in for them. Internal to engine/formats: callers use dequantize.h and quantize_ggml.h.
//
// Each CPU class has a sparse list of the kernels it adds; dequantize.cc resolves the lists once
// into one table per class (a kernel the class lacks is the lesser class's, or the traits'
// reference), and each call reads the table of the class CpuAllows() grants: one indirect call
// per row, none per element.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "engine/formats/dtype.h"

namespace superweight {
namespace internal {

// Scalar references (dequantize.cc), llama.cpp's dequantize_row_* step for step.
void F32ToFloat(const uint8_t* src, int64_t n, float* dst);
void F16ToFloat(const uint8_t* src, int64_t n, float* dst);
void BF16ToFloat(const uint8_t* src, int64_t n, float* dst);
void Q4_0ToFloat(const uint8_t* src, int64_t n, float* dst);
void Q4_1ToFloat(const uint8_t* src, int64_t n, float* dst);
void Q5_0ToFloat(const uint8_t* src, int64_t n, float* dst);
void Q5_1ToFloat(const uint8_t* src, int64_t n, float* dst);
void Q8_0ToFloat(const uint8_t* src, int64_t n, float* dst);
void Q4_KToFloat(const uint8_t* src, int64_t n, float* dst);
void Q5_KToFloat(const uint8_t* src, int64_t n, float* dst);
void Q6_KToFloat(const uint8_t* src, int64_t n, float* dst);
void Q2_KToFloat(const uint8_t* src, int64_t n, float* dst);
void Q3_KToFloat(const uint8_t* src, int64_t n, float* dst);

void F32ToBFloat16(const uint8_t* src, int64_t n, uint16_t* dst);
void BF16ToBFloat16(const uint8_t* src, int64_t n, uint16_t* dst);  // a copy

void Q4_0ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride);
void Q4_1ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride);
void Q5_0ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride);
void Q5_1ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride);
void Q8_0ToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride);
void Q4_KToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride);
void Q5_KToBlockCodes(const uint8_t* src, int64_t n, uint16_t* codes, float* scale, float* offset,
                      int64_t stride);

// Reference quantizers (quantize_ggml.cc), on finite values (QuantizeRow checks).
void F32FromFloat(const float* x, int64_t n, uint8_t* out);
void F16FromFloat(const float* x, int64_t n, uint8_t* out);
void BF16FromFloat(const float* x, int64_t n, uint8_t* out);
void Q4_0FromFloat(const float* x, int64_t n, uint8_t* out);
void Q4_1FromFloat(const float* x, int64_t n, uint8_t* out);
void Q5_0FromFloat(const float* x, int64_t n, uint8_t* out);
void Q5_1FromFloat(const float* x, int64_t n, uint8_t* out);
void Q8_0FromFloat(const float* x, int64_t n, uint8_t* out);
void Q4_KFromFloat(const float* x, int64_t n, uint8_t* out);
void Q5_KFromFloat(const float* x, int64_t n, uint8_t* out);
void Q6_KFromFloat(const float* x, int64_t n, uint8_t* out);
void Q2_KFromFloat(const float* x, int64_t n, uint8_t* out);
void Q3_KFromFloat(const float* x, int64_t n, uint8_t* out);

// One CPU class's kernels for one type; a null member leaves that conversion to the lesser
// class (or the traits). Each must give exactly the reference's bits.
struct RowKernels {
  ToFloatFn to_float = nullptr;
  ToBFloat16Fn to_bf16 = nullptr;
  ToBlockCodesFn to_block_codes = nullptr;
};
struct TypeKernels {
  DType type;
  RowKernels kernels;
};

// The AVX512-BF16 class's list (dequantize_avx512bf16.cc, built for it). The AVX2 class's, the
// build's baseline, is in dequantize.cc.
absl::Span<const TypeKernels> Avx512Bf16Kernels();

}  // namespace internal
}  // namespace superweight
