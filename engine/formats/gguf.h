// Reader of GGUF (versions 2 and 3), the file format of llama.cpp: key-value metadata, then
// tensor infos, then aligned tensor data. Works on bytes so a fuzzer can drive it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/formats/dtype.h"

namespace superweight {

// One metadata value. Scalars fill one of the scalar fields; arrays fill `strings` (arrays of
// strings) or `numbers` (arrays of any numeric or bool type).
struct GgufValue {
  enum class Kind { kInt, kFloat, kBool, kString, kArray } kind = Kind::kInt;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<std::string> strings;
  std::vector<double> numbers;
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> ne;  // GGML order: ne[0] is the innermost (contiguous) dimension
  DType dtype;
  const uint8_t* data;
  uint64_t nbytes;
};

class GgufFile {
 public:
  uint32_t version = 0;
  std::map<std::string, GgufValue> metadata;
  std::map<std::string, GgufTensor> tensors;

  const GgufValue* Find(const std::string& key) const;
  std::optional<int64_t> GetInt(const std::string& key) const;
  std::optional<double> GetFloat(const std::string& key) const;
  std::optional<std::string> GetString(const std::string& key) const;
  std::optional<bool> GetBool(const std::string& key) const;
};

absl::StatusOr<GgufFile> ParseGguf(absl::Span<const uint8_t> bytes, const std::string& name);

}  // namespace superweight
