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
  // The value as the file encodes it, for copying it byte for byte (the fields above lose the
  // exact type: an int32 array and a float32 array both become `numbers`): its gguf_type id
  // (8 string, 9 array, ...; see GgufValueType) and the bytes after that id (an array's element
  // type, count and elements). Like GgufTensor::data, `encoded` points into the parsed bytes.
  uint32_t type = 0;
  absl::Span<const uint8_t> encoded;
};

// gguf_type: the type ids of metadata values.
enum GgufValueType : uint32_t {
  kGgufU8 = 0,
  kGgufI8 = 1,
  kGgufU16 = 2,
  kGgufI16 = 3,
  kGgufU32 = 4,
  kGgufI32 = 5,
  kGgufF32 = 6,
  kGgufBool = 7,
  kGgufString = 8,
  kGgufArray = 9,
  kGgufU64 = 10,
  kGgufI64 = 11,
  kGgufF64 = 12,
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
  // The keys and tensor names in the order the file lists them (a key listed twice keeps its
  // first place and its last value), so that a copy can keep the file's order.
  std::vector<std::string> metadata_order;
  std::vector<std::string> tensor_order;

  const GgufValue* Find(const std::string& key) const;
  std::optional<int64_t> GetInt(const std::string& key) const;
  std::optional<double> GetFloat(const std::string& key) const;
  std::optional<std::string> GetString(const std::string& key) const;
  std::optional<bool> GetBool(const std::string& key) const;
};

absl::StatusOr<GgufFile> ParseGguf(absl::Span<const uint8_t> bytes, const std::string& name);

}  // namespace superweight
