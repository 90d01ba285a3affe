// Conversion of f32 values to GGML storage, byte-identical with llama.cpp's reference quantizers
// (quantize_row_q4_0_ref ... quantize_row_q6_K_ref in ggml-quants.c) and its fp32 -> fp16/bf16
// conversions: the inverse of dequantize.h, for writing GGUF files llama.cpp reads as its own.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/formats/dtype.h"

namespace superweight {

// Whether QuantizeRow can produce `type`: every type of dtype.h (F32, F16, BF16, Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K); false only for a type added without its
// quantizer.
bool HasGgmlQuantizer(DType type);

// The type llama.cpp's llama_model_quantize writes a tensor in when its rows of `row_length`
// values are not whole blocks of `requested` (llama-quant.cpp's tensor_type_fallback, applied
// with --pure too): Q2_K and Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16 when
// the rows are not whole blocks of that either. `requested` itself when its blocks fit the rows, or
// when llama.cpp has no fallback for it (the 32-value types: it refuses such tensors, and callers
// do too).
DType FallbackTypeForRows(DType requested, int64_t row_length);

// Writes the n values of x as StorageBytes(type, n) bytes at out. INVALID_ARGUMENT when n is not
// a whole number of blocks or a value is NaN or infinite (naming the first such index; nothing is
// written then), UNIMPLEMENTED for types without HasGgmlQuantizer.
absl::Status QuantizeRow(DType type, const float* x, int64_t n, uint8_t* out);

// A rows x cols matrix (row-major, cols contiguous, as GGML's ne[0] = cols), row by row: each row
// is its own run of blocks, so cols must be a whole number of blocks.
absl::StatusOr<std::vector<uint8_t>> QuantizeTensor(DType type, const float* x, int64_t rows,
                                                    int64_t cols);

// ggml's GGML_FP32_TO_FP16 on x86 (F16C's vcvtps2ph with round to nearest even): subnormal
// halves kept, overflow to infinity, NaN made quiet with its sign and top payload bits.
uint16_t GgmlFloatToHalf(float f);

// ggml_compute_fp32_to_bf16: round to nearest even, NaN made quiet, subnormals kept (unlike
// dequantize.h's FloatToBFloat16, which flushes them as the AVX512-BF16 instruction does).
uint16_t GgmlFloatToBFloat16(float f);

}  // namespace superweight
