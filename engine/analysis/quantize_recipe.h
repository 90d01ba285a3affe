// A recipe for the user's own quantizer: which llama-quantize --tensor-type overrides keep a
// model's super weights through one of its file types (Q4_K_M, Q3_K_M, Q2_K...). For each tensor
// that holds a super weight, every candidate type is measured on the stored values (the super
// weight's relative error, and the whole tensor's), and the mix's own choice is kept where it
// already keeps the super weight; otherwise the smallest candidate that keeps it without
// hurting the tensor is named.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/ablate.h"  // SuperWeightCoordinate
#include "engine/formats/llama_quantize_plan.h"
#include "engine/model/model.h"

namespace superweight {

struct RecipeOptions {
  LlamaFtype file_type;
  std::vector<SuperWeightCoordinate> super_weights;
  // A type keeps a super weight when the value it stores is within this relative error.
  double max_super_weight_error = 0.01;
  const std::atomic<bool>* cancelled = nullptr;  // CANCELLED once set (checked per row)
};

struct TypeCandidate {
  DType requested;  // as an override names it
  DType written;    // after llama.cpp's fallback for rows that are not whole blocks of it
  double bits_per_weight = 0;
  double super_weight_relative_error = 0;  // the worst of the tensor's super weights
  double tensor_relative_error = 0;        // ||quantized - stored|| / ||stored||
};

struct RecipeTensor {
  std::string name;  // GGUF, "blk.11.ffn_down.weight"
  std::vector<SuperWeightCoordinate> super_weights;
  // What the file type gives it with the overrides of the tensors before it (llama.cpp counts
  // no overridden tensor in its mix, so an override moves the layers the mix raises after it).
  DType mix_type;
  DType chosen;  // what the recipe gives it
  bool overridden = false;
  std::vector<TypeCandidate> candidates;  // by bits per weight
};

struct QuantizeRecipe {
  LlamaFtype file_type;
  std::vector<RecipeTensor> tensors;
  std::vector<TensorTypeOverride> overrides;  // --tensor-type, in the order to pass them
  bool source_quantized = false;              // llama-quantize then needs --allow-requantize
};

// UNIMPLEMENTED for a model not opened from one GGUF file (llama-quantize reads GGUF) or for
// super weights of routed experts; INVALID_ARGUMENT for a coordinate outside the model or a
// file type that is not quantized (llama-quantize applies no override to F16, BF16, F32).
absl::StatusOr<QuantizeRecipe> PlanQuantizeRecipe(const Model& model, const RecipeOptions& options);

// The llama-quantize command line that carries the recipe out, each argument quoted for a POSIX
// shell where it needs it; imatrix_path empty: none.
std::string LlamaQuantizeCommand(const QuantizeRecipe& recipe, const std::string& model_path,
                                 const std::string& out_path, const std::string& imatrix_path);

}  // namespace superweight
