#include "engine/formats/gguf.h"

#include <cstdint>
#include <type_traits>

#include "absl/strings/str_format.h"
#include "engine/util/byte_reader.h"

namespace superweight {
namespace {

// Reads one number as a double and as an int64 (exact for integer types, saturated for
// uint64 past INT64_MAX and for floats out of range; a hostile file must not reach the
// undefined float-to-int conversion).
template <typename T>
absl::Status ReadNumber(ByteReader& r, double* out, int64_t* as_int, const char* what) {
  T v{};
  if (auto s = r.Read(&v, what); !s.ok()) return s;
  *out = static_cast<double>(v);
  if constexpr (std::is_floating_point_v<T>) {
    const double d = static_cast<double>(v);
    *as_int = !(d == d)      ? 0
              : d >= 9.2e18  ? INT64_MAX
              : d <= -9.2e18 ? INT64_MIN
                             : static_cast<int64_t>(d);
  } else if constexpr (std::is_same_v<T, uint64_t>) {
    *as_int = v > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v);
  } else {
    *as_int = static_cast<int64_t>(v);
  }
  return absl::OkStatus();
}

absl::Status ReadScalarNumber(ByteReader& r, uint32_t type, double* out, int64_t* as_int,
                              const char* what) {
  switch (type) {
    case kGgufU8:
      return ReadNumber<uint8_t>(r, out, as_int, what);
    case kGgufI8:
      return ReadNumber<int8_t>(r, out, as_int, what);
    case kGgufU16:
      return ReadNumber<uint16_t>(r, out, as_int, what);
    case kGgufI16:
      return ReadNumber<int16_t>(r, out, as_int, what);
    case kGgufU32:
      return ReadNumber<uint32_t>(r, out, as_int, what);
    case kGgufI32:
      return ReadNumber<int32_t>(r, out, as_int, what);
    case kGgufF32:
      return ReadNumber<float>(r, out, as_int, what);
    case kGgufBool:
      return ReadNumber<uint8_t>(r, out, as_int, what);
    case kGgufU64:
      return ReadNumber<uint64_t>(r, out, as_int, what);
    case kGgufI64:
      return ReadNumber<int64_t>(r, out, as_int, what);
    case kGgufF64:
      return ReadNumber<double>(r, out, as_int, what);
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s has unknown value type %d", r.name(), what, type));
  }
}

absl::Status ReadValue(ByteReader& r, uint32_t type, GgufValue* v, const std::string& key) {
  const char* what = key.c_str();
  if (type == kGgufString) {
    v->kind = GgufValue::Kind::kString;
    return r.ReadString(&v->s, what);
  }
  if (type == kGgufArray) {
    v->kind = GgufValue::Kind::kArray;
    uint32_t elem_type = 0;
    uint64_t count = 0;
    if (auto s = r.Read(&elem_type, what); !s.ok()) return s;
    if (auto s = r.Read(&count, what); !s.ok()) return s;
    // Each element takes at least one byte (strings at least eight), so a count larger than the
    // remaining bytes is a lie that must not size an allocation.
    if (count > r.remaining()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: array '%s' claims %d elements, more than the file holds", r.name(), key, count));
    }
    if (elem_type == kGgufString) {
      v->strings.resize(count);
      for (auto& s : v->strings) {
        if (auto st = r.ReadString(&s, what); !st.ok()) return st;
      }
      return absl::OkStatus();
    }
    if (elem_type == kGgufArray) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: nested arrays in '%s' are not supported", r.name(), key));
    }
    v->numbers.resize(count);
    int64_t ignored = 0;
    for (auto& x : v->numbers) {
      if (auto st = ReadScalarNumber(r, elem_type, &x, &ignored, what); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  double x = 0;
  int64_t as_int = 0;
  if (auto s = ReadScalarNumber(r, type, &x, &as_int, what); !s.ok()) return s;
  if (type == kGgufF32 || type == kGgufF64) {
    v->kind = GgufValue::Kind::kFloat;
  } else if (type == kGgufBool) {
    v->kind = GgufValue::Kind::kBool;
    v->b = x != 0;
  } else {
    v->kind = GgufValue::Kind::kInt;
    v->i = as_int;
  }
  v->f = x;  // every number is also readable as a float (GetFloat accepts integers)
  return absl::OkStatus();
}

}  // namespace

const GgufValue* GgufFile::Find(const std::string& key) const {
  auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}
std::optional<int64_t> GgufFile::GetInt(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr || v->kind != GgufValue::Kind::kInt) return std::nullopt;
  return v->i;
}
std::optional<double> GgufFile::GetFloat(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr || (v->kind != GgufValue::Kind::kFloat && v->kind != GgufValue::Kind::kInt)) {
    return std::nullopt;
  }
  return v->f;
}
std::optional<std::string> GgufFile::GetString(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr || v->kind != GgufValue::Kind::kString) return std::nullopt;
  return v->s;
}
std::optional<bool> GgufFile::GetBool(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr || v->kind != GgufValue::Kind::kBool) return std::nullopt;
  return v->b;
}

absl::StatusOr<GgufFile> ParseGguf(absl::Span<const uint8_t> bytes, const std::string& name) {
  ByteReader r(bytes, name);
  uint32_t magic = 0;
  if (auto s = r.Read(&magic, "magic"); !s.ok()) return s;
  if (magic != 0x46554747) {  // "GGUF" little-endian
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a GGUF file (bad magic)", name));
  }
  GgufFile file;
  uint64_t tensor_count = 0, kv_count = 0;
  if (auto s = r.Read(&file.version, "version"); !s.ok()) return s;
  if (file.version != 2 && file.version != 3) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: unsupported GGUF version %d", name, file.version));
  }
  if (auto s = r.Read(&tensor_count, "tensor count"); !s.ok()) return s;
  if (auto s = r.Read(&kv_count, "metadata count"); !s.ok()) return s;
  if (kv_count > r.remaining() || tensor_count > r.remaining()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: counts (%d tensors, %d keys) exceed the file", name, tensor_count, kv_count));
  }
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key;
    uint32_t type = 0;
    if (auto s = r.ReadString(&key, "metadata key"); !s.ok()) return s;
    if (auto s = r.Read(&type, "metadata type"); !s.ok()) return s;
    GgufValue value;
    const size_t value_start = r.offset();
    if (auto s = ReadValue(r, type, &value, key); !s.ok()) return s;
    value.type = type;
    value.encoded = bytes.subspan(value_start, r.offset() - value_start);
    auto [it, inserted] = file.metadata.insert_or_assign(key, std::move(value));
    if (inserted) file.metadata_order.push_back(it->first);
  }
  struct Info {
    std::string name;
    std::vector<int64_t> ne;
    uint32_t type = 0;
    uint64_t offset = 0;
  };
  std::vector<Info> infos(tensor_count);
  for (auto& info : infos) {
    uint32_t n_dims = 0;
    if (auto s = r.ReadString(&info.name, "tensor name"); !s.ok()) return s;
    if (auto s = r.Read(&n_dims, "tensor rank"); !s.ok()) return s;
    if (n_dims == 0 || n_dims > 4) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s' has rank %d", name, info.name, n_dims));
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      if (auto s = r.Read(&dim, "tensor dimension"); !s.ok()) return s;
      if (dim > (uint64_t{1} << 40)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: tensor '%s' has dimension %d", name, info.name, dim));
      }
      info.ne.push_back(static_cast<int64_t>(dim));
    }
    if (auto s = r.Read(&info.type, "tensor type"); !s.ok()) return s;
    if (auto s = r.Read(&info.offset, "tensor offset"); !s.ok()) return s;
  }
  uint64_t alignment = 32;
  if (auto a = file.GetInt("general.alignment")) {
    if (*a <= 0 || (*a & (*a - 1)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: general.alignment %d is not a power of two", name, *a));
    }
    alignment = static_cast<uint64_t>(*a);
  }
  uint64_t data_start = (r.offset() + alignment - 1) / alignment * alignment;
  if (data_start > bytes.size()) {
    // llama.cpp writes a file without tensors (a vocabulary) with no padding after its header.
    if (!infos.empty()) return r.Truncated("tensor data");
    data_start = bytes.size();
  }
  const uint64_t data_size = bytes.size() - data_start;
  for (auto& info : infos) {
    auto dtype = DTypeFromGgml(info.type);
    if (!dtype.ok()) {
      return absl::Status(
          dtype.status().code(),
          absl::StrFormat("%s: tensor '%s': %s", name, info.name, dtype.status().message()));
    }
    uint64_t numel = 1;
    for (int64_t d : info.ne) {
      if (d != 0 && numel > (uint64_t{1} << 50) / static_cast<uint64_t>(d)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: tensor '%s' shape overflows", name, info.name));
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (info.ne[0] % Traits(*dtype).block_elements != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s': row of %d elements is not whole %s blocks", name,
                          info.name, info.ne[0], DTypeName(*dtype)));
    }
    auto nbytes = StorageBytes(*dtype, numel);
    if (!nbytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s': %s", name, info.name, nbytes.status().message()));
    }
    if (info.offset > data_size || *nbytes > data_size - info.offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s': bytes [%d, %d) of the data section are out of range (%d bytes)", name,
          info.name, info.offset, info.offset + *nbytes, data_size));
    }
    const uint8_t* data = bytes.data() + data_start + info.offset;
    if (file.tensors.count(info.name) == 0) file.tensor_order.push_back(info.name);
    file.tensors[info.name] = {info.name, std::move(info.ne), *dtype, data, *nbytes};
  }
  return file;
}

}  // namespace superweight
