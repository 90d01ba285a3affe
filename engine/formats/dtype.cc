#include "engine/formats/dtype.h"

#include "absl/strings/str_format.h"

namespace superweight {

const DTypeTraits& Traits(DType type) {
  // Block geometry from the GGML quantization formats (ggml-common.h).
  static const DTypeTraits kTable[] = {
      {"F32", 1, 4},      {"F16", 1, 2},      {"BF16", 1, 2},     {"Q4_0", 32, 18},
      {"Q4_1", 32, 20},   {"Q5_0", 32, 22},   {"Q5_1", 32, 24},   {"Q8_0", 32, 34},
      {"Q4_K", 256, 144}, {"Q5_K", 256, 176}, {"Q6_K", 256, 210},
  };
  return kTable[static_cast<int>(type)];
}

absl::StatusOr<uint64_t> StorageBytes(DType type, uint64_t n) {
  const DTypeTraits& t = Traits(type);
  if (n % t.block_elements != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d elements of %s are not a whole number of %d-element blocks", n, t.name,
                        t.block_elements));
  }
  uint64_t blocks = n / t.block_elements;
  if (blocks > UINT64_MAX / t.block_bytes) {
    return absl::InvalidArgumentError("tensor size overflows");
  }
  return blocks * t.block_bytes;
}

namespace {
// ggml_type ids (ggml.h), indexed by DType; the inverse of DTypeFromGgml below (a unit test
// checks the round trip).
constexpr uint32_t kGgmlTypeIds[] = {0, 1, 30, 2, 3, 6, 7, 8, 12, 13, 14};
constexpr int kDTypeCount = static_cast<int>(DType::kQ6_K) + 1;
static_assert(sizeof(kGgmlTypeIds) / sizeof(kGgmlTypeIds[0]) == kDTypeCount);
}  // namespace

uint32_t GgmlTypeId(DType type) { return kGgmlTypeIds[static_cast<int>(type)]; }

absl::StatusOr<DType> DTypeFromName(absl::string_view name) {
  for (int t = 0; t < kDTypeCount; ++t) {
    if (name == Traits(static_cast<DType>(t)).name) return static_cast<DType>(t);
  }
  return absl::InvalidArgumentError(absl::StrFormat("unknown element type '%s'", name));
}

absl::StatusOr<DType> DTypeFromGgml(uint32_t ggml_type) {
  switch (ggml_type) {
    case 0:
      return DType::kF32;
    case 1:
      return DType::kF16;
    case 2:
      return DType::kQ4_0;
    case 3:
      return DType::kQ4_1;
    case 6:
      return DType::kQ5_0;
    case 7:
      return DType::kQ5_1;
    case 8:
      return DType::kQ8_0;
    case 12:
      return DType::kQ4_K;
    case 13:
      return DType::kQ5_K;
    case 14:
      return DType::kQ6_K;
    case 30:
      return DType::kBF16;
    default:
      return absl::UnimplementedError(
          absl::StrFormat("unsupported GGML tensor type %d", ggml_type));
  }
}

}  // namespace superweight
