// Element types of weight tensors, float and GGML block-quantized, with their storage geometry.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

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

}  // namespace superweight
