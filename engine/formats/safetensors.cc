#include "engine/formats/safetensors.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

// Element size of every safetensors dtype; the float ones map onto DType.
bool ElementSize(const std::string& dtype, int* size, bool* is_float, DType* type) {
  static const struct {
    const char* name;
    int size;
    bool is_float;
    DType type;
  } kTypes[] = {
      {"F32", 4, true, DType::kF32},      {"F16", 2, true, DType::kF16},
      {"BF16", 2, true, DType::kBF16},    {"F64", 8, false, DType::kF32},
      {"I64", 8, false, DType::kF32},     {"I32", 4, false, DType::kF32},
      {"I16", 2, false, DType::kF32},     {"I8", 1, false, DType::kF32},
      {"U8", 1, false, DType::kF32},      {"BOOL", 1, false, DType::kF32},
      {"U16", 2, false, DType::kF32},     {"U32", 4, false, DType::kF32},
      {"U64", 8, false, DType::kF32},     {"F8_E4M3", 1, false, DType::kF32},
      {"F8_E5M2", 1, false, DType::kF32},
  };
  for (const auto& t : kTypes) {
    if (dtype == t.name) {
      *size = t.size;
      *is_float = t.is_float;
      *type = t.type;
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                                 const std::string& name) {
  auto error = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", name, msg));
  };
  if (bytes.size() < 8) return error("truncated: shorter than the 8-byte header length");
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > bytes.size() - 8) {
    return error(absl::StrFormat("header length %d runs past the end of the file (%d bytes)",
                                 header_len, bytes.size()));
  }
  const char* header = reinterpret_cast<const char*>(bytes.data() + 8);
  nlohmann::json root = nlohmann::json::parse(header, header + header_len, nullptr,
                                              /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return error("header is not a JSON object");

  const uint8_t* data = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;
  SafetensorsFile file;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) return error("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (m.value().is_string()) file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) return error(absl::StrFormat("tensor '%s': entry is not an object", key));
    auto dtype_it = v.find("dtype");
    auto shape_it = v.find("shape");
    auto offsets_it = v.find("data_offsets");
    if (dtype_it == v.end() || !dtype_it->is_string() || shape_it == v.end() ||
        !shape_it->is_array() || offsets_it == v.end() || !offsets_it->is_array() ||
        offsets_it->size() != 2) {
      return error(absl::StrFormat("tensor '%s': needs dtype, shape and data_offsets", key));
    }
    int elem_size;
    bool is_float;
    DType type;
    const std::string dtype = dtype_it->get<std::string>();
    if (!ElementSize(dtype, &elem_size, &is_float, &type)) {
      return error(absl::StrFormat("tensor '%s': unknown dtype '%s'", key, dtype));
    }
    uint64_t numel = 1;
    std::vector<int64_t> shape;
    for (const auto& d : *shape_it) {
      if (!d.is_number_unsigned()) {
        return error(absl::StrFormat("tensor '%s': shape has a non-integer dimension", key));
      }
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) {
        return error(absl::StrFormat("tensor '%s': shape overflows", key));
      }
      numel *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& b = (*offsets_it)[0];
    const auto& e = (*offsets_it)[1];
    if (!b.is_number_unsigned() || !e.is_number_unsigned()) {
      return error(absl::StrFormat("tensor '%s': data_offsets are not integers", key));
    }
    const uint64_t begin = b.get<uint64_t>(), end = e.get<uint64_t>();
    if (begin > end || end > data_size) {
      return error(absl::StrFormat(
          "tensor '%s': data_offsets [%d, %d) out of range of the %d-byte data section", key, begin,
          end, data_size));
    }
    // numel is at most 2^62 and an element up to 8 bytes: divided first, never multiplied past
    // 64 bits (2^62 F32 elements once wrapped around to 0 bytes and were accepted).
    if (numel > (end - begin) / elem_size || end - begin != numel * elem_size) {
      return error(absl::StrFormat("tensor '%s': %d bytes do not hold shape of %d %s elements", key,
                                   end - begin, numel, dtype));
    }
    if (is_float) file.tensors[key] = {type, std::move(shape), data + begin, end - begin};
  }
  return file;
}

}  // namespace superweight
