#include "engine/model/tensor_names.h"

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/model/loaders.h"

namespace superweight {
namespace {

using R = TensorRole;

// Names from transformers' modeling files and llama.cpp's tensor table (facts, not code).
constexpr TensorNaming kEmbedding = {R::kTokenEmbedding, false, "model.embed_tokens.weight",
                                     "token_embd.weight", true};
constexpr TensorNaming kOutput = {R::kOutput, false, "lm_head.weight", "output.weight", false};
constexpr TensorNaming kOutputNorm = {R::kOutputNorm, false, "model.norm.weight",
                                      "output_norm.weight", true};
constexpr TensorNaming kAttnNorm = {R::kAttnNorm, true, "input_layernorm.weight",
                                    "attn_norm.weight", true};
constexpr TensorNaming kFfnNorm = {R::kFfnNorm, true, "post_attention_layernorm.weight",
                                   "ffn_norm.weight", true};
constexpr TensorNaming kQ = {R::kAttnQ, true, "self_attn.q_proj.weight", "attn_q.weight", true};
constexpr TensorNaming kK = {R::kAttnK, true, "self_attn.k_proj.weight", "attn_k.weight", true};
constexpr TensorNaming kV = {R::kAttnV, true, "self_attn.v_proj.weight", "attn_v.weight", true};
constexpr TensorNaming kO = {R::kAttnOutput, true, "self_attn.o_proj.weight", "attn_output.weight",
                             true};
constexpr TensorNaming kGate = {R::kFfnGate, true, "mlp.gate_proj.weight", "ffn_gate.weight", true};
constexpr TensorNaming kUp = {R::kFfnUp, true, "mlp.up_proj.weight", "ffn_up.weight", true};
constexpr TensorNaming kDown = {R::kFfnDown, true, "mlp.down_proj.weight", "ffn_down.weight", true};
constexpr TensorNaming kQkv = {R::kAttnQkv, true, "self_attn.qkv_proj.weight", "attn_qkv.weight",
                               true};
constexpr TensorNaming kGateUp = {R::kFfnGateUp, true, "mlp.gate_up_proj.weight", "ffn_up.weight",
                                  true};
constexpr TensorNaming kQBias = {R::kAttnQBias, true, "self_attn.q_proj.bias", "attn_q.bias", true};
constexpr TensorNaming kKBias = {R::kAttnKBias, true, "self_attn.k_proj.bias", "attn_k.bias", true};
constexpr TensorNaming kVBias = {R::kAttnVBias, true, "self_attn.v_proj.bias", "attn_v.bias", true};

constexpr TensorNaming kQNorm = {R::kAttnQNorm, true, "self_attn.q_norm.weight",
                                 "attn_q_norm.weight", true};
constexpr TensorNaming kKNorm = {R::kAttnKNorm, true, "self_attn.k_norm.weight",
                                 "attn_k_norm.weight", true};
// Gemma's four norms: transformers calls the post-attention norm post_attention_layernorm (the
// pre-MLP norm of the Llama table) and the pre-MLP norm pre_feedforward_layernorm.
constexpr TensorNaming kPostAttnNorm = {R::kPostAttnNorm, true, "post_attention_layernorm.weight",
                                        "post_attention_norm.weight", true};
constexpr TensorNaming kPostFfnNorm = {R::kPostFfnNorm, true, "post_feedforward_layernorm.weight",
                                       "post_ffw_norm.weight", true};
constexpr TensorNaming kPreFfnNorm = {R::kFfnNorm, true, "pre_feedforward_layernorm.weight",
                                      "ffn_norm.weight", true};

// Mixture of experts.
constexpr TensorNaming kRouter = {R::kFfnRouter, true, "mlp.gate.weight", "ffn_gate_inp.weight",
                                  true};
constexpr TensorNaming kExpertGate = {
    R::kExpertGate, true, "mlp.experts.{E}.gate_proj.weight", "ffn_gate_exps.weight", true, true};
constexpr TensorNaming kExpertUp = {R::kExpertUp,         true, "mlp.experts.{E}.up_proj.weight",
                                    "ffn_up_exps.weight", true, true};
constexpr TensorNaming kExpertDown = {
    R::kExpertDown, true, "mlp.experts.{E}.down_proj.weight", "ffn_down_exps.weight", true, true};
constexpr TensorNaming kSharedGate = {R::kFfnGate, true, "mlp.shared_expert.gate_proj.weight",
                                      "ffn_gate_shexp.weight", true};
constexpr TensorNaming kSharedUp = {R::kFfnUp, true, "mlp.shared_expert.up_proj.weight",
                                    "ffn_up_shexp.weight", true};
constexpr TensorNaming kSharedDown = {R::kFfnDown, true, "mlp.shared_expert.down_proj.weight",
                                      "ffn_down_shexp.weight", true};
constexpr TensorNaming kSharedExpertGate = {
    R::kSharedExpertGate, true, "mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight", true};
// Mixtral's names: w1 the gate, w3 the up, w2 the down projection.
constexpr TensorNaming kMixtralRouter = {R::kFfnRouter, true, "block_sparse_moe.gate.weight",
                                         "ffn_gate_inp.weight", true};
constexpr TensorNaming kMixtralGate = {
    R::kExpertGate,         true, "block_sparse_moe.experts.{E}.w1.weight",
    "ffn_gate_exps.weight", true, true};
constexpr TensorNaming kMixtralUp = {
    R::kExpertUp, true, "block_sparse_moe.experts.{E}.w3.weight", "ffn_up_exps.weight", true, true};
constexpr TensorNaming kMixtralDown = {
    R::kExpertDown,         true, "block_sparse_moe.experts.{E}.w2.weight",
    "ffn_down_exps.weight", true, true};

constexpr TensorNaming kLlamaTable[] = {
    kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm, kQ, kK, kV, kO, kGate, kUp, kDown};
constexpr TensorNaming kQwen2Table[] = {kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm,
                                        kQ,         kK,      kV,          kO,        kGate,
                                        kUp,        kDown,   kQBias,      kKBias,    kVBias};
// OLMo (1): non-parametric layer norms, so no norm tensors at all.
constexpr TensorNaming kOlmoTable[] = {kEmbedding, kOutput, kQ, kK, kV, kO, kGate, kUp, kDown};
constexpr TensorNaming kPhi3Table[] = {kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm,
                                       kQkv,       kO,      kGateUp,     kDown};

constexpr TensorNaming kQwen3Table[] = {kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm,
                                        kQ,         kK,      kV,          kO,        kGate,
                                        kUp,        kDown,   kQNorm,      kKNorm};
// OLMo 2: norms after the attention and the MLP only.
constexpr TensorNaming kOlmo2Table[] = {
    kEmbedding, kOutput, kOutputNorm, kPostAttnNorm, kPostFfnNorm, kQ,     kK,
    kV,         kO,      kGate,       kUp,           kDown,        kQNorm, kKNorm};
constexpr TensorNaming kGemma2Table[] = {
    kEmbedding, kOutput, kOutputNorm, kAttnNorm, kPostAttnNorm, kPreFfnNorm, kPostFfnNorm,
    kQ,         kK,      kV,          kO,        kGate,         kUp,         kDown};
constexpr TensorNaming kGemma3Table[] = {
    kEmbedding, kOutput, kOutputNorm, kAttnNorm, kPostAttnNorm, kPreFfnNorm, kPostFfnNorm, kQ,
    kK,         kV,      kO,          kGate,     kUp,           kDown,       kQNorm,       kKNorm};

constexpr TensorNaming kMixtralTable[] = {
    kEmbedding, kOutput, kOutputNorm,    kAttnNorm,    kFfnNorm,   kQ,          kK,
    kV,         kO,      kMixtralRouter, kMixtralGate, kMixtralUp, kMixtralDown};
constexpr TensorNaming kQwen2MoeTable[] = {
    kEmbedding,  kOutput,     kOutputNorm, kAttnNorm,   kFfnNorm,
    kQ,          kK,          kV,          kO,          kQBias,
    kKBias,      kVBias,      kRouter,     kExpertGate, kExpertUp,
    kExpertDown, kSharedGate, kSharedUp,   kSharedDown, kSharedExpertGate};
constexpr TensorNaming kQwen3MoeTable[] = {
    kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm,    kQ,        kK,         kV,
    kO,         kQNorm,  kKNorm,      kRouter,   kExpertGate, kExpertUp, kExpertDown};
constexpr TensorNaming kOlmoeTable[] = {kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm,
                                        kQ,         kK,      kV,          kO,        kQNorm,
                                        kKNorm,     kRouter, kExpertGate, kExpertUp, kExpertDown};

constexpr const char* kHfLayerPrefix = "model.layers.";
constexpr const char* kGgufLayerPrefix = "blk.";
constexpr const char* kExpertPlaceholder = "{E}";

// A whole number of at most 9 digits, or -1.
int ParseIndex(absl::string_view digits) {
  if (digits.empty() || digits.size() > 9 ||
      digits.find_first_not_of("0123456789") != absl::string_view::npos) {
    return -1;
  }
  return std::atoi(std::string(digits).c_str());
}

}  // namespace

namespace {

// Model or const Model: the vector's constness follows the model's.
template <typename M>
auto VectorOfRoleIn(TensorRole role, int layer, M* model) -> decltype(&model->final_norm) {
  if (role == R::kOutputNorm) return &model->final_norm;
  if (layer < 0 || layer >= static_cast<int>(model->layers.size())) return nullptr;
  auto& w = model->layers[layer];
  switch (role) {
    case R::kAttnNorm:
      return &w.attn_norm;
    case R::kFfnNorm:
      return &w.ffn_norm;
    case R::kPostAttnNorm:
      return &w.post_attn_norm;
    case R::kPostFfnNorm:
      return &w.post_ffn_norm;
    case R::kAttnQNorm:
      return &w.q_norm;
    case R::kAttnKNorm:
      return &w.k_norm;
    case R::kAttnQBias:
      return &w.q_bias;
    case R::kAttnKBias:
      return &w.k_bias;
    case R::kAttnVBias:
      return &w.v_bias;
    case R::kSharedExpertGate:
      return &w.shared_expert_gate;
    default:
      return nullptr;
  }
}

}  // namespace

std::vector<float>* VectorOfRole(TensorRole role, int layer, Model* model) {
  return VectorOfRoleIn(role, layer, model);
}

const std::vector<float>* VectorOfRole(TensorRole role, int layer, const Model& model) {
  return VectorOfRoleIn(role, layer, &model);
}

bool IsNormRole(TensorRole role) {
  return role == R::kOutputNorm || role == R::kAttnNorm || role == R::kFfnNorm ||
         role == R::kPostAttnNorm || role == R::kPostFfnNorm || role == R::kAttnQNorm ||
         role == R::kAttnKNorm;
}

absl::Span<const TensorNaming> TensorTable(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
    case Architecture::kMistral:
      return kLlamaTable;
    case Architecture::kQwen2:
      return kQwen2Table;
    case Architecture::kOlmo:
      return kOlmoTable;
    case Architecture::kPhi3:
      return kPhi3Table;
    case Architecture::kQwen3:
      return kQwen3Table;
    case Architecture::kOlmo2:
      return kOlmo2Table;
    case Architecture::kGemma2:
      return kGemma2Table;
    case Architecture::kGemma3:
      return kGemma3Table;
    case Architecture::kMixtral:
      return kMixtralTable;
    case Architecture::kQwen2Moe:
      return kQwen2MoeTable;
    case Architecture::kQwen3Moe:
      return kQwen3MoeTable;
    case Architecture::kOlmoe:
      return kOlmoeTable;
  }
  return {};
}

const TensorNaming* FindRole(Architecture arch, TensorRole role) {
  for (const TensorNaming& naming : TensorTable(arch)) {
    if (naming.role == role) return &naming;
  }
  return nullptr;
}

std::string TensorName(const TensorNaming& naming, ModelFormat format, int layer, int expert) {
  const bool gguf = format == ModelFormat::kGguf;
  std::string base = gguf ? naming.gguf : naming.hf;
  if (!gguf && naming.per_expert) {
    base = absl::StrReplaceAll(base, {{kExpertPlaceholder, absl::StrCat(expert)}});
  }
  if (!naming.per_layer) return base;
  return absl::StrCat(gguf ? kGgufLayerPrefix : kHfLayerPrefix, layer, ".", base);
}

std::optional<LinearKind> ExpertKindOfRole(TensorRole role) {
  switch (role) {
    case R::kExpertGate:
      return LinearKind::kGate;
    case R::kExpertUp:
      return LinearKind::kUp;
    case R::kExpertDown:
      return LinearKind::kDown;
    default:
      return std::nullopt;
  }
}

std::optional<LinearKind> LinearKindOfRole(TensorRole role) {
  switch (role) {
    case R::kAttnQ:
      return LinearKind::kQ;
    case R::kAttnK:
      return LinearKind::kK;
    case R::kAttnV:
      return LinearKind::kV;
    case R::kAttnOutput:
      return LinearKind::kO;
    case R::kFfnGate:
      return LinearKind::kGate;
    case R::kFfnUp:
      return LinearKind::kUp;
    case R::kFfnDown:
      return LinearKind::kDown;
    default:
      return std::nullopt;
  }
}

std::optional<NamedTensor> FindTensorNaming(Architecture arch, ModelFormat format,
                                            const std::string& name) {
  const bool gguf = format == ModelFormat::kGguf;
  const std::string prefix = gguf ? kGgufLayerPrefix : kHfLayerPrefix;
  int layer = -1;
  std::string base = name;
  if (absl::StartsWith(name, prefix)) {
    const size_t dot = name.find('.', prefix.size());
    if (dot == std::string::npos) return std::nullopt;
    layer = ParseIndex(absl::string_view(name).substr(prefix.size(), dot - prefix.size()));
    if (layer < 0) return std::nullopt;
    base = name.substr(dot + 1);
  }
  for (const TensorNaming& naming : TensorTable(arch)) {
    if (naming.per_layer != (layer >= 0)) continue;
    const absl::string_view pattern = gguf ? naming.gguf : naming.hf;
    if (base == pattern) return NamedTensor{&naming, layer};
    const size_t at = pattern.find(kExpertPlaceholder);
    if (gguf || !naming.per_expert || at == absl::string_view::npos) continue;
    const absl::string_view head = pattern.substr(0, at), tail = pattern.substr(at + 3);
    if (base.size() > head.size() + tail.size() && absl::StartsWith(base, head) &&
        absl::EndsWith(base, tail)) {
      const int expert = ParseIndex(
          absl::string_view(base).substr(head.size(), base.size() - head.size() - tail.size()));
      if (expert >= 0) return NamedTensor{&naming, layer, expert};
    }
  }
  return std::nullopt;
}

absl::Status FillWeightsFromTable(const TensorSource& source, ModelFormat format, Model* model) {
  const ModelConfig& c = model->config;
  model->layers.resize(c.layers);
  for (int l = -1; l < c.layers; ++l) {
    std::optional<Matrix> qkv, gate_up;
    for (const TensorNaming& naming : TensorTable(c.arch)) {
      if (naming.per_layer != (l >= 0)) continue;
      if (naming.role == R::kTokenEmbedding || naming.role == R::kOutput) continue;  // loaders'
      const std::string name = TensorName(naming, format, l);
      if (!naming.required && !source.Has(name)) continue;
      if (std::vector<float>* vector = VectorOfRole(naming.role, l, model)) {
        auto v = source.GetVector(name);
        if (!v.ok()) return v.status();
        *vector = std::move(*v);
        continue;
      }
      if (auto expert_kind = ExpertKindOfRole(naming.role)) {
        std::vector<ExpertWeights>& experts = model->layers[l].experts;
        experts.resize(c.experts);
        auto member = [&](int e) -> Matrix& {
          return *expert_kind == LinearKind::kGate ? experts[e].gate
                 : *expert_kind == LinearKind::kUp ? experts[e].up
                                                   : experts[e].down;
        };
        if (format == ModelFormat::kGguf) {
          auto stacked = source.GetStackedMatrices(name, c.experts);
          if (!stacked.ok()) return stacked.status();
          for (int e = 0; e < c.experts; ++e) member(e) = (*stacked)[e];
        } else {
          for (int e = 0; e < c.experts; ++e) {
            auto m = source.GetMatrix(TensorName(naming, format, l, e));
            if (!m.ok()) return m.status();
            member(e) = *m;
          }
        }
        continue;
      }
      auto m = source.GetMatrix(name);
      if (!m.ok()) return m.status();
      if (naming.role == R::kFfnRouter) {
        model->layers[l].router = *m;
      } else if (naming.role == R::kAttnQkv) {
        qkv = *m;
      } else if (naming.role == R::kFfnGateUp) {
        gate_up = *m;
      } else if (auto kind = LinearKindOfRole(naming.role)) {
        model->layers[l].Get(*kind) = *m;
      }
    }
    if (qkv.has_value() != gate_up.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("layer %d has only one of the fused projections", l));
    }
    if (qkv.has_value()) {
      if (auto s = SplitFusedProjections(*qkv, *gate_up, c, l, &model->layers[l]); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace superweight
