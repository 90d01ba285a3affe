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

constexpr TensorNaming kLlamaTable[] = {
    kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm, kQ, kK, kV, kO, kGate, kUp, kDown};
constexpr TensorNaming kQwen2Table[] = {kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm,
                                        kQ,         kK,      kV,          kO,        kGate,
                                        kUp,        kDown,   kQBias,      kKBias,    kVBias};
// OLMo (1): non-parametric layer norms, so no norm tensors at all.
constexpr TensorNaming kOlmoTable[] = {kEmbedding, kOutput, kQ, kK, kV, kO, kGate, kUp, kDown};
constexpr TensorNaming kPhi3Table[] = {kEmbedding, kOutput, kOutputNorm, kAttnNorm, kFfnNorm,
                                       kQkv,       kO,      kGateUp,     kDown};

constexpr const char* kHfLayerPrefix = "model.layers.";
constexpr const char* kGgufLayerPrefix = "blk.";

}  // namespace

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
      if (naming.role == R::kOutputNorm || naming.role == R::kAttnNorm ||
          naming.role == R::kFfnNorm || naming.role == R::kAttnQBias ||
          naming.role == R::kAttnKBias || naming.role == R::kAttnVBias) {
        auto v = source.GetVector(name);
        if (!v.ok()) return v.status();
        switch (naming.role) {
          case R::kOutputNorm:
            model->final_norm = std::move(*v);
            break;
          case R::kAttnNorm:
            model->layers[l].attn_norm = std::move(*v);
            break;
          case R::kFfnNorm:
            model->layers[l].ffn_norm = std::move(*v);
            break;
          case R::kAttnQBias:
            model->layers[l].q_bias = std::move(*v);
            break;
          case R::kAttnKBias:
            model->layers[l].k_bias = std::move(*v);
            break;
          default:
            model->layers[l].v_bias = std::move(*v);
            break;
        }
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
