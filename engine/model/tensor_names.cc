#include "engine/model/tensor_names.h"

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
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

constexpr const char* kHfLayerPrefix = "model.layers.";
constexpr const char* kGgufLayerPrefix = "blk.";

}  // namespace

std::vector<float>* VectorOfRole(TensorRole role, int layer, Model* model) {
  if (role == R::kOutputNorm) return &model->final_norm;
  if (layer < 0 || layer >= static_cast<int>(model->layers.size())) return nullptr;
  LayerWeights& w = model->layers[layer];
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
    default:
      return nullptr;
  }
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
  }
  return {};
}

const TensorNaming* FindRole(Architecture arch, TensorRole role) {
  for (const TensorNaming& naming : TensorTable(arch)) {
    if (naming.role == role) return &naming;
  }
  return nullptr;
}

std::string TensorName(const TensorNaming& naming, ModelFormat format, int layer) {
  const bool gguf = format == ModelFormat::kGguf;
  const char* base = gguf ? naming.gguf : naming.hf;
  if (!naming.per_layer) return base;
  return absl::StrCat(gguf ? kGgufLayerPrefix : kHfLayerPrefix, layer, ".", base);
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
    const std::string digits = name.substr(prefix.size(), dot - prefix.size());
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
      return std::nullopt;
    }
    layer = std::atoi(digits.c_str());
    base = name.substr(dot + 1);
  }
  for (const TensorNaming& naming : TensorTable(arch)) {
    if (naming.per_layer != (layer >= 0)) continue;
    if (base == (gguf ? naming.gguf : naming.hf)) return NamedTensor{&naming, layer};
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
      auto m = source.GetMatrix(name);
      if (!m.ok()) return m.status();
      if (naming.role == R::kAttnQkv) {
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
