// Reader of the safetensors format: an 8-byte little-endian header length, a JSON header naming
// each tensor's dtype, shape and byte range, then the raw data. Works on bytes so a fuzzer can
// drive it; nothing is copied out of the data section.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/formats/dtype.h"

namespace superweight {

struct SafetensorsTensor {
  DType dtype;
  std::vector<int64_t> shape;  // row-major, outermost first
  const uint8_t* data;         // points into the parsed bytes
  uint64_t nbytes;
};

struct SafetensorsFile {
  std::map<std::string, SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata;  // the optional __metadata__ object
};

// Parses and validates the header against the byte length. `name` prefixes every error.
// Tensors of dtypes other than F32/F16/BF16 are validated and then left out of `tensors`.
absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                                 const std::string& name);

}  // namespace superweight
