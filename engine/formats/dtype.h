// Element types of weight tensors, float and GGML block-quantized: each type's storage geometry,
// identity in files and row conversions in one traits entry (dtype.cc), in the spirit of
// llama.cpp's ggml_type_traits. Adding a type is an enum value here, its entry in dtype.cc and
// its row functions (row_kernels.h); per-ISA vector kernels, where it has them, are one line each
// in the ISA's list.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace superweight {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ8_0,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kQ2_K,
  kQ3_K,
};
inline constexpr int kDTypeCount = static_cast<int>(DType::kQ3_K) + 1;

// Row conversions: n elements, a whole number of blocks, from src's stored blocks to dst.
using ToFloatFn = void (*)(const uint8_t* src, int64_t n, float* dst);
using ToBFloat16Fn = void (*)(const uint8_t* src, int64_t n, uint16_t* dst);
// Per 32-element group g: codes, scale[g * stride] and offset[g * stride] (DecodeRowToBlockCodes).
using ToBlockCodesFn = void (*)(const uint8_t* src, int64_t n, uint16_t* codes, float* scale,
                                float* offset, int64_t stride);
using FromFloatFn = void (*)(const float* x, int64_t n, uint8_t* out);

inline constexpr int32_t kNoLlamaFileType = -1;

struct DTypeTraits {
  DType type;              // the entry's own index (checked at compile time)
  const char* name;        // as GGUF tools and llama.cpp print it
  int64_t block_elements;  // elements per block (1 for plain floats)
  int64_t block_bytes;     // bytes per block
  uint32_t ggml_type;      // ggml_type id stored in GGUF files (ggml.h)
  // llama_ftype of a file mostly of this type (general.file_type), or kNoLlamaFileType.
  int32_t llama_ftype;
  // The scalar conversions, bit-exact with llama.cpp's dequantize_row_*: the reference that
  // DequantizeRow's vector kernels (selected per CPU class in dequantize.cc) are tested against.
  ToFloatFn to_float;
  // Straight to bf16 (FloatToBFloat16 of to_float's values), or null: through f32 in chunks.
  ToBFloat16Fn to_bf16;
  // Exact integer codes per 32-element group (dequantize.h), or null where the type has none.
  ToBlockCodesFn to_block_codes;
  bool block_codes_have_offsets;  // whether those codes' offsets can be nonzero
  // Byte-identical with llama.cpp's quantize_row_*_ref (or its fp32 conversion), or null.
  FromFloatFn from_float_ref;
};

const DTypeTraits& Traits(DType type);
inline const char* DTypeName(DType type) { return Traits(type).name; }
inline bool IsQuantized(DType type) { return Traits(type).block_elements > 1; }

// Bytes taken by n elements; fails when n is not a whole number of blocks or overflows.
absl::StatusOr<uint64_t> StorageBytes(DType type, uint64_t n);

// The GGML type id used in GGUF files (ggml_type), or an error for types this engine lacks.
absl::StatusOr<DType> DTypeFromGgml(uint32_t ggml_type);
// Its inverse: the ggml_type id a GGUF writer stores for `type`.
inline uint32_t GgmlTypeId(DType type) { return Traits(type).ggml_type; }

// The type whose Traits(type).name is `name` ("Q8_0", "BF16"...), or INVALID_ARGUMENT.
absl::StatusOr<DType> DTypeFromName(absl::string_view name);

}  // namespace superweight
