// The per-tensor types llama.cpp's llama-quantize writes for each of its file types (llama_ftype:
// Q4_K_M, Q3_K_S, Q2_K, ...), as llama-quant.cpp's llama_tensor_get_type chooses them, with its
// --tensor-type overrides, --output-tensor-type, --token-embedding-type and --pure: so that a file
// the engine writes for "Q4_K_M" holds the types llama-quantize's would, tensor by tensor, and a
// recipe can say what a given command line will do to the tensors that hold super weights.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/formats/dtype.h"
#include "engine/formats/gguf.h"

namespace superweight {

// A llama.cpp file type: its name as llama-quantize takes it, its llama_ftype value
// (general.file_type) and the type of the tensors its mix does not single out.
struct LlamaFtype {
  const char* name;
  uint32_t ftype;
  DType default_type;
};

// The file types whose every tensor type the engine can write: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K.
const std::vector<LlamaFtype>& LlamaFileTypes();
// By name, case-insensitively; INVALID_ARGUMENT naming the choices otherwise.
absl::StatusOr<LlamaFtype> FindLlamaFileType(absl::string_view name);

// --tensor-type PATTERN=TYPE: the first override whose pattern (an ECMAScript regular expression,
// lower-cased as llama-quantize does) occurs in a tensor's name sets its type, and that tensor
// then takes no part in the mix's layer counting (llama.cpp's order).
struct TensorTypeOverride {
  std::string pattern;
  DType type;
};
// "PATTERN=TYPE" as llama-quantize parses it; INVALID_ARGUMENT for a malformed one.
absl::StatusOr<TensorTypeOverride> ParseTensorTypeOverride(absl::string_view text);

struct LlamaQuantizeOptions {
  LlamaFtype file_type = {"Q8_0", 7, DType::kQ8_0};
  std::vector<TensorTypeOverride> overrides;
  std::optional<DType> output_tensor_type;
  std::optional<DType> token_embedding_type;
  bool pure = false;         // --pure: the default type everywhere (bar fallbacks and overrides)
  bool has_imatrix = false;  // an importance matrix changes a few choices (Q4_0/Q5_0 ffn_down)
};

struct PlannedTensor {
  std::string name;
  DType from;
  DType to;                 // == from: copied unchanged
  bool overridden = false;  // an override or the output/embedding type chose it
  bool fallback = false;    // rows not whole blocks of the chosen type: llama.cpp's fallback
};

struct LlamaQuantizePlan {
  uint32_t file_type = 0;  // general.file_type of the result
  // Every tensor of the file, in the order llama-quantize visits and writes them (the
  // non-layer tensors first, then layer by layer, each by name).
  std::vector<PlannedTensor> tensors;
  const PlannedTensor* Find(absl::string_view name) const;
};

// The plan for `file` (its tensors and the architecture's hyperparameters in its metadata).
// INVALID_ARGUMENT for a bad override pattern or a tensor name a mixture-of-experts rule cannot
// place in a layer; UNIMPLEMENTED for a chosen type without a quantizer here.
absl::StatusOr<LlamaQuantizePlan> PlanLlamaQuantize(const GgufFile& file,
                                                    const LlamaQuantizeOptions& options);

}  // namespace superweight
