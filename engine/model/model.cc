#include "engine/model/model.h"

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/model/loaders.h"

namespace superweight {

namespace {

using P = NormPlacement;
using A = MlpActivation;

// Facts from transformers' modeling files and llama.cpp's model table.
constexpr ArchitectureTraits kTraits[] = {
    // arch, name, model_type, class, head_dim in config, interleaved in GGUF, norms, qk norm,
    // activation, (1 + w) norms, scaled embeddings, moe, shared expert, renormalized top-k
    {Architecture::kLlama, "llama", "llama", "LlamaForCausalLM", true, true, P::kPre, QkNorm::kNone,
     A::kSilu, false, false, false, false, false},
    {Architecture::kMistral, "mistral", "mistral", "MistralForCausalLM", true, false, P::kPre,
     QkNorm::kNone, A::kSilu, false, false, false, false, false},
    {Architecture::kQwen2, "qwen2", "qwen2", "Qwen2ForCausalLM", false, false, P::kPre,
     QkNorm::kNone, A::kSilu, false, false, false, false, false},
    {Architecture::kOlmo, "olmo", "olmo", "OlmoForCausalLM", false, false, P::kPre, QkNorm::kNone,
     A::kSilu, false, false, false, false, false},
    {Architecture::kPhi3, "phi3", "phi3", "Phi3ForCausalLM", false, false, P::kPre, QkNorm::kNone,
     A::kSilu, false, false, false, false, false},
    {Architecture::kQwen3, "qwen3", "qwen3", "Qwen3ForCausalLM", true, false, P::kPre,
     QkNorm::kPerHead, A::kSilu, false, false, false, false, false},
    {Architecture::kOlmo2, "olmo2", "olmo2", "Olmo2ForCausalLM", false, false, P::kPost,
     QkNorm::kWholeProjection, A::kSilu, false, false, false, false, false},
    {Architecture::kGemma2, "gemma2", "gemma2", "Gemma2ForCausalLM", true, false, P::kSandwich,
     QkNorm::kNone, A::kGeluTanh, true, true, false, false, false},
    {Architecture::kGemma3, "gemma3", "gemma3_text", "Gemma3ForCausalLM", true, false, P::kSandwich,
     QkNorm::kPerHead, A::kGeluTanh, true, true, false, false, false},
    {Architecture::kMixtral, "mixtral", "mixtral", "MixtralForCausalLM", true, true, P::kPre,
     QkNorm::kNone, A::kSilu, false, false, true, false, true},
    {Architecture::kQwen2Moe, "qwen2moe", "qwen2_moe", "Qwen2MoeForCausalLM", false, false, P::kPre,
     QkNorm::kNone, A::kSilu, false, false, true, true, false},
    {Architecture::kQwen3Moe, "qwen3moe", "qwen3_moe", "Qwen3MoeForCausalLM", true, false, P::kPre,
     QkNorm::kPerHead, A::kSilu, false, false, true, false, true},
    {Architecture::kOlmoe, "olmoe", "olmoe", "OlmoeForCausalLM", false, false, P::kPre,
     QkNorm::kWholeProjection, A::kSilu, false, false, true, false, false},
};

}  // namespace

const ArchitectureTraits& TraitsOf(Architecture arch) {
  for (const ArchitectureTraits& t : kTraits) {
    if (t.arch == arch) return t;
  }
  return kTraits[0];  // unreachable: every enumerator has a row (model_test checks)
}

const char* ArchitectureName(Architecture arch) { return TraitsOf(arch).name; }

absl::StatusOr<Architecture> ArchitectureFromName(const std::string& name) {
  std::string supported;
  for (const ArchitectureTraits& t : kTraits) {
    if (name == t.name || name == t.hf_model_type) return t.arch;
    absl::StrAppend(&supported, supported.empty() ? "" : ", ", t.name);
  }
  return absl::UnimplementedError(
      absl::StrFormat("unknown architecture '%s' (supported: %s)", name, supported));
}

const char* ModelFormatName(ModelFormat format) {
  switch (format) {
    case ModelFormat::kHuggingFace:
      return "huggingface";
    case ModelFormat::kGguf:
      return "gguf";
    case ModelFormat::kLlama2c:
      return "llama2c";
  }
  return "?";
}

const char* LinearKindName(LinearKind kind) {
  static const char* kNames[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                 "gate_proj", "up_proj", "down_proj"};
  return kNames[static_cast<int>(kind)];
}

const char* LinearInputSiteName(LinearInputSite site) {
  static const char* kNames[] = {"qkv_input", "o_input", "gate_up_input", "down_input"};
  return kNames[static_cast<int>(site)];
}

float Matrix::At(int64_t row, int64_t col) const {
  if (transform != nullptr) {
    std::vector<float> values(cols);
    RowToFloat(row, values.data());
    return values[col];
  }
  const int64_t block = Traits(dtype).block_elements;
  const int64_t first = col / block * block;
  float values[256];
  DequantizeRow(dtype, Row(row) + first / block * Traits(dtype).block_bytes, block, values);
  return values[col - first];
}

void Matrix::RowToFloat(int64_t r, float* out) const {
  DequantizeRow(dtype, Row(r), cols, out);
  if (transform != nullptr) transform->Apply(transform_row0 + r, 1, cols, out);
}

const Matrix* LayerWeights::Find(LinearKind kind, int expert) const {
  const Matrix* m = nullptr;
  if (expert < 0) {
    m = &Get(kind);
  } else if (expert < static_cast<int>(experts.size())) {
    const ExpertWeights& x = experts[expert];
    m = kind == LinearKind::kGate   ? &x.gate
        : kind == LinearKind::kUp   ? &x.up
        : kind == LinearKind::kDown ? &x.down
                                    : nullptr;
  }
  return m != nullptr && m->data != nullptr ? m : nullptr;
}

std::unique_ptr<Model> Model::ShareWeights() const {
  auto copy = std::make_unique<Model>();
  copy->path = path;
  copy->format = format;
  copy->name = name;
  copy->config = config;
  copy->embed = embed;
  copy->lm_head = lm_head;
  copy->final_norm = final_norm;
  copy->layers = layers;
  copy->tokenizer = tokenizer;
  copy->files = files;
  copy->activation_transform = activation_transform;
  return copy;
}

uint64_t Model::MappedBytes() const {
  uint64_t total = 0;
  for (const auto& f : files) total += f->size();
  return total;
}

bool Model::MappingFaulted() const {
  for (const auto& f : files) {
    if (f->faulted()) return true;
  }
  return false;
}

absl::Status Model::CheckFilesUnchanged() const {
  for (const auto& f : files) {
    if (absl::Status s = f->CheckUnchanged(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> OpenModel(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrFormat("%s: no such model file or directory", path));
  }
  if (S_ISDIR(st.st_mode)) return OpenHuggingFaceModel(path);
  if (absl::EndsWith(path, ".gguf")) return OpenGgufModel(path);
  if (absl::EndsWith(path, ".bin")) return OpenLlama2cModel(path);
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: not a model (expected a Hugging Face directory, a .gguf or a llama2.c .bin)", path));
}

}  // namespace superweight
