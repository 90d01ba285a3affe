// Element types of weight tensors, float and GGML block-quantized, with their storage geometry.
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
};

struct DTypeTraits {
  const char* name;
  int64_t block_elements;  // elements per block (1 for plain floats)
  int64_t block_bytes;     // bytes per block
};

const DTypeTraits& Traits(DType type);
inline const char* DTypeName(DType type) { return Traits(type).name; }
inline bool IsQuantized(DType type) { return Traits(type).block_elements > 1; }

// Bytes taken by n elements; fails when n is not a whole number of blocks or overflows.
absl::StatusOr<uint64_t> StorageBytes(DType type, uint64_t n);

// The GGML type id used in GGUF files (ggml_type), or an error for types this engine lacks.
absl::StatusOr<DType> DTypeFromGgml(uint32_t ggml_type);
// Its inverse: the ggml_type id a GGUF writer stores for `type`.
uint32_t GgmlTypeId(DType type);

// The type whose Traits(type).name is `name` ("Q8_0", "BF16"...), or INVALID_ARGUMENT.
absl::StatusOr<DType> DTypeFromName(absl::string_view name);

}  // namespace superweight
