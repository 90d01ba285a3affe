// Every tensor of a model by its role, with its Hugging Face and GGUF names: one table per
// architecture, read by both loaders and by the exporters (as llama.cpp keeps its per-architecture
// tensor names in one place).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/model/model.h"

namespace superweight {

enum class TensorRole {
  kTokenEmbedding,
  kOutput,  // the lm_head; absent when tied to the embedding
  kOutputNorm,
  kAttnNorm,
  kFfnNorm,
  kAttnQ,
  kAttnK,
  kAttnV,
  kAttnQkv,  // Phi-3's fused q, k, v rows
  kAttnOutput,
  kFfnGate,
  kFfnUp,
  kFfnGateUp,  // Phi-3's fused gate rows, then up rows
  kFfnDown,
  kAttnQBias,
  kAttnKBias,
  kAttnVBias,
  kPostAttnNorm,  // after the attention's output projection (OLMo 2, Gemma)
  kPostFfnNorm,   // after the MLP's down projection (OLMo 2, Gemma)
  kAttnQNorm,     // QkNorm's weights
  kAttnKNorm,
  kFfnRouter,   // the MoE router [experts, hidden]
  kExpertGate,  // per expert: Hugging Face names one tensor per expert ({E} in the name),
  kExpertUp,    // GGUF stacks them in one 3-D tensor [experts, rows, cols]
  kExpertDown,
  kSharedExpertGate,  // Qwen2-MoE: the shared expert's sigmoid gate [hidden]
};

struct TensorNaming {
  TensorRole role;
  bool per_layer;
  const char* hf;    // per-layer names follow "model.layers.N."
  const char* gguf;  // per-layer names follow "blk.N."
  bool required;
  bool per_expert = false;  // one matrix per expert (kExpert* roles)
};

// The architecture's tensors, global ones first.
absl::Span<const TensorNaming> TensorTable(Architecture arch);

// The architecture's entry for a role, or nullptr where it has no such tensor.
const TensorNaming* FindRole(Architecture arch, TensorRole role);

// The model's f32 vector a role fills (a norm's or a bias's; layer -1 for the final norm), or
// nullptr for matrices and for a layer the model does not have.
std::vector<float>* VectorOfRole(TensorRole role, int layer, Model* model);
const std::vector<float>* VectorOfRole(TensorRole role, int layer, const Model& model);
// Whether a role is a norm's weights (the values Gemma's checkpoints store as w for 1 + w).
bool IsNormRole(TensorRole role);

// The full name in a format (kHuggingFace or kGguf); layer is ignored for global tensors, expert
// for all but a Hugging Face per-expert tensor.
std::string TensorName(const TensorNaming& naming, ModelFormat format, int layer, int expert = -1);

// The expert matrix a per-expert role is.
std::optional<LinearKind> ExpertKindOfRole(TensorRole role);

// The linear weight a role is, if it is one of a layer's seven (fused roles are not).
std::optional<LinearKind> LinearKindOfRole(TensorRole role);

// A tensor name's role and layer (-1 for global tensors) in an architecture's table.
struct NamedTensor {
  const TensorNaming* naming;
  int layer;
  int expert = -1;  // a Hugging Face per-expert tensor's expert
};
std::optional<NamedTensor> FindTensorNaming(Architecture arch, ModelFormat format,
                                            const std::string& name);

// How a loader reads a tensor by name: whether it is there, and as a matrix in the Hugging Face
// layout or as a small f32 vector.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool Has(const std::string& name) const = 0;
  virtual absl::StatusOr<Matrix> GetMatrix(const std::string& name) const = 0;
  virtual absl::StatusOr<std::vector<float>> GetVector(const std::string& name) const = 0;
  // A 3-D tensor of `experts` stacked matrices as one view each (GGUF's ffn_*_exps).
  virtual absl::StatusOr<std::vector<Matrix>> GetStackedMatrices(const std::string& name,
                                                                 int experts) const {
    return absl::UnimplementedError(name + ": stacked expert tensors are GGUF's");
  }
};

// Fills the model's final norm and every layer's weights from the table (after the loader has
// set the config and the embedding): required tensors missing are INVALID_ARGUMENT naming them.
absl::Status FillWeightsFromTable(const TensorSource& source, ModelFormat format, Model* model);

}  // namespace superweight
