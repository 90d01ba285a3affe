#include "engine/model/model.h"

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/model/loaders.h"

namespace superweight {

const char* ArchitectureName(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kMistral:
      return "mistral";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kOlmo:
      return "olmo";
    case Architecture::kPhi3:
      return "phi3";
  }
  return "?";
}

absl::StatusOr<Architecture> ArchitectureFromName(const std::string& name) {
  for (Architecture a : {Architecture::kLlama, Architecture::kMistral, Architecture::kQwen2,
                         Architecture::kOlmo, Architecture::kPhi3}) {
    if (name == ArchitectureName(a)) return a;
  }
  return absl::UnimplementedError(absl::StrFormat(
      "unknown architecture '%s' (supported: llama, mistral, qwen2, olmo, phi3)", name));
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
