#include "engine/formats/dtype.h"

#include "absl/strings/str_format.h"
#include "engine/formats/row_kernels.h"

namespace superweight {
namespace {

using namespace internal;  // NOLINT(build/namespaces): the row functions, for the table only

// Block geometry from ggml-common.h, ggml_type ids from ggml.h, llama_ftype values from llama.h.
// Columns: type, name, block elements, block bytes, ggml_type, llama_ftype, to_float, to_bf16,
// to_block_codes, block_codes_have_offsets, from_float_ref (as named in the first entry).
constexpr DTypeTraits kTraits[] = {
    {DType::kF32, "F32", /*block_elements=*/1, /*block_bytes=*/4, /*ggml_type=*/0,
     /*llama_ftype=*/0, F32ToFloat, F32ToBFloat16, /*to_block_codes=*/nullptr,
     /*block_codes_have_offsets=*/false, F32FromFloat},
    {DType::kF16, "F16", 1, 2, 1, 1, F16ToFloat, /*to_bf16=*/nullptr, nullptr, false, F16FromFloat},
    {DType::kBF16, "BF16", 1, 2, 30, 32, BF16ToFloat, BF16ToBFloat16, nullptr, false,
     BF16FromFloat},
    {DType::kQ4_0, "Q4_0", 32, 18, 2, 2, Q4_0ToFloat, nullptr, Q4_0ToBlockCodes, false,
     Q4_0FromFloat},
    {DType::kQ4_1, "Q4_1", 32, 20, 3, 3, Q4_1ToFloat, nullptr, Q4_1ToBlockCodes, true,
     Q4_1FromFloat},
    {DType::kQ5_0, "Q5_0", 32, 22, 6, 8, Q5_0ToFloat, nullptr, Q5_0ToBlockCodes, false,
     Q5_0FromFloat},
    {DType::kQ5_1, "Q5_1", 32, 24, 7, 9, Q5_1ToFloat, nullptr, Q5_1ToBlockCodes, true,
     Q5_1FromFloat},
    {DType::kQ8_0, "Q8_0", 32, 34, 8, 7, Q8_0ToFloat, nullptr, Q8_0ToBlockCodes, false,
     Q8_0FromFloat},
    // K-quants: llama_ftype names K-quant mixes; a file of one K type is what llama-quantize
    // writes for the small mix with --pure (Q4_K_S = 14, Q5_K_S = 16; Q6_K = 18 is one type).
    {DType::kQ4_K, "Q4_K", 256, 144, 12, 14, Q4_KToFloat, nullptr, Q4_KToBlockCodes, true,
     Q4_KFromFloat},
    {DType::kQ5_K, "Q5_K", 256, 176, 13, 16, Q5_KToFloat, nullptr, Q5_KToBlockCodes, true,
     Q5_KFromFloat},
    // Q6_K's scales change every 16 elements: no 32-element codes form.
    {DType::kQ6_K, "Q6_K", 256, 210, 14, 18, Q6_KToFloat, nullptr, nullptr, false, Q6_KFromFloat},
    // Q2_K and Q3_K: 16-value sub-blocks too. Q2_K's file is its own mix (10); a file of Q3_K
    // alone is the small mix with --pure (Q3_K_S = 11).
    {DType::kQ2_K, "Q2_K", 256, 84, 10, 10, Q2_KToFloat, nullptr, nullptr, false, Q2_KFromFloat},
    {DType::kQ3_K, "Q3_K", 256, 110, 11, 11, Q3_KToFloat, nullptr, nullptr, false, Q3_KFromFloat},
};

constexpr bool EntriesInEnumOrder() {
  for (int t = 0; t < kDTypeCount; ++t) {
    if (static_cast<int>(kTraits[t].type) != t) return false;
  }
  return true;
}
static_assert(sizeof(kTraits) / sizeof(kTraits[0]) == kDTypeCount, "one entry per DType");
static_assert(EntriesInEnumOrder(), "kTraits[t].type == t");

}  // namespace

const DTypeTraits& Traits(DType type) { return kTraits[static_cast<int>(type)]; }

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

absl::StatusOr<DType> DTypeFromName(absl::string_view name) {
  for (const DTypeTraits& t : kTraits) {
    if (name == t.name) return t.type;
  }
  return absl::InvalidArgumentError(absl::StrFormat("unknown element type '%s'", name));
}

absl::StatusOr<DType> DTypeFromGgml(uint32_t ggml_type) {
  for (const DTypeTraits& t : kTraits) {
    if (t.ggml_type == ggml_type) return t.type;
  }
  return absl::UnimplementedError(absl::StrFormat("unsupported GGML tensor type %d", ggml_type));
}

}  // namespace superweight
