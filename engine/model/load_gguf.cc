// GGUF files as llama.cpp writes them. Tensor names follow llama.cpp's table (blk.N.ffn_down...).
#include "absl/strings/str_format.h"
#include "engine/formats/gguf.h"
#include "engine/model/loaders.h"
#include "engine/model/tensor_names.h"

namespace superweight {
namespace {

class GgufTensorSource : public TensorSource {
 public:
  GgufTensorSource(const GgufFile& gguf, const std::string& path) : gguf_(gguf), path_(path) {}
  bool Has(const std::string& name) const override { return gguf_.tensors.count(name) > 0; }
  absl::StatusOr<Matrix> GetMatrix(const std::string& name) const override {
    auto t = Find(name, 2);
    if (!t.ok()) return t.status();
    return Matrix::Make((*t)->dtype, (*t)->ne[1], (*t)->ne[0], (*t)->data);
  }
  absl::StatusOr<std::vector<float>> GetVector(const std::string& name) const override {
    auto t = Find(name, 1);
    if (!t.ok()) return t.status();
    return ToFloatVector((*t)->dtype, (*t)->data, (*t)->ne[0]);
  }

 private:
  absl::StatusOr<const GgufTensor*> Find(const std::string& name, size_t dims) const {
    auto it = gguf_.tensors.find(name);
    if (it == gguf_.tensors.end()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: missing tensor %s", path_, name));
    }
    if (it->second.ne.size() != dims) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor %s is not %d-D", path_, name, dims));
    }
    return &it->second;
  }
  const GgufFile& gguf_;
  const std::string& path_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> OpenGgufModel(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  auto gguf = ParseGguf((*file)->bytes(), path);
  if (!gguf.ok()) return gguf.status();
  if (gguf->tensors.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s holds no tensors: a vocabulary-only GGUF is a tokenizer, not a model", path));
  }
  auto model = std::make_unique<Model>();
  model->path = path;
  model->format = ModelFormat::kGguf;
  model->files.push_back(*file);
  model->name = gguf->GetString("general.name").value_or(path.substr(path.find_last_of('/') + 1));
  auto error = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", path, msg));
  };

  const std::string arch_name = gguf->GetString("general.architecture").value_or("");
  auto arch = ArchitectureFromName(arch_name);
  if (!arch.ok()) {
    return absl::Status(arch.status().code(),
                        absl::StrFormat("%s: %s", path, arch.status().message()));
  }
  ModelConfig& c = model->config;
  c.arch = *arch;
  auto get_int = [&](const std::string& key, int* out, bool required) -> absl::Status {
    auto v = gguf->GetInt(arch_name + "." + key);
    if (!v) return required ? error("missing metadata " + arch_name + "." + key) : absl::OkStatus();
    if (*v < 0 || *v > (int64_t{1} << 30)) return error("metadata " + key + " out of range");
    *out = static_cast<int>(*v);
    return absl::OkStatus();
  };
  for (auto [key, out] : {std::pair{"embedding_length", &c.hidden},
                          {"feed_forward_length", &c.intermediate},
                          {"block_count", &c.layers},
                          {"attention.head_count", &c.heads}}) {
    if (auto s = get_int(key, out, true); !s.ok()) return s;
  }
  c.kv_heads = c.heads;
  if (auto s = get_int("attention.head_count_kv", &c.kv_heads, false); !s.ok()) return s;
  c.head_dim = c.heads > 0 ? c.hidden / c.heads : 0;
  if (auto s = get_int("attention.key_length", &c.head_dim, false); !s.ok()) return s;
  if (auto s = get_int("context_length", &c.max_positions, false); !s.ok()) return s;
  c.rope.rotary_dim = c.head_dim;
  if (auto s = get_int("rope.dimension_count", &c.rope.rotary_dim, false); !s.ok()) return s;
  c.rope.theta = static_cast<float>(gguf->GetFloat(arch_name + ".rope.freq_base").value_or(10000));
  c.norm_eps = static_cast<float>(
      gguf->GetFloat(arch_name + ".attention.layer_norm_rms_epsilon")
          .value_or(gguf->GetFloat(arch_name + ".attention.layer_norm_epsilon").value_or(1e-5)));
  if (c.arch == Architecture::kOlmo) {
    c.norm = NormKind::kLayerNormNoParams;
    c.clip_qkv = static_cast<float>(gguf->GetFloat(arch_name + ".attention.clamp_kqv").value_or(0));
  }
  // llama.cpp's converter permutes q/k rows of llama models into interleaved-pair order; the
  // NeoX-style architectures keep Hugging Face's order.
  c.rope.interleaved = c.arch == Architecture::kLlama;
  if (gguf->tensors.count("rope_freqs.weight")) {
    return absl::UnimplementedError(
        absl::StrFormat("%s: per-dimension rope frequency factors are not supported yet", path));
  }

  GgufTensorSource source(*gguf, path);
  const std::string embed_name =
      TensorName(*FindRole(c.arch, TensorRole::kTokenEmbedding), ModelFormat::kGguf, -1);
  auto embed = source.GetMatrix(embed_name);
  if (!embed.ok()) return embed.status();
  model->embed = *embed;
  c.vocab = static_cast<int>(embed->rows);
  model->lm_head = model->embed;
  const std::string head_name =
      TensorName(*FindRole(c.arch, TensorRole::kOutput), ModelFormat::kGguf, -1);
  if (source.Has(head_name)) {
    auto head = source.GetMatrix(head_name);
    if (!head.ok()) return head.status();
    model->lm_head = *head;
  }
  if (auto s = ValidateConfig(c, path); !s.ok()) return s;
  if (auto s = FillWeightsFromTable(source, ModelFormat::kGguf, model.get()); !s.ok()) {
    return s.message().find(path) == 0 ? s : error(std::string(s.message()));
  }
  auto tok = LoadGgufTokenizer(*gguf, path);
  if (!tok.ok()) return tok.status();
  model->tokenizer = std::move(*tok);
  c.bos_token = model->tokenizer->bos_id();
  c.eos_token = model->tokenizer->eos_id();
  // The file's add_bos_token, else the default llama.cpp gives its vocabulary and pre-tokenizer
  // (SentencePiece and Llama 3's BPE add one), as the tokenizer decided it.
  c.add_bos = model->tokenizer->add_bos();
  if (auto s = ValidateModel(*model); !s.ok()) return s;
  return model;
}

}  // namespace superweight
