// GGUF files as llama.cpp writes them. Tensor names follow llama.cpp's table (blk.N.ffn_down...).
#include <algorithm>
#include <cmath>

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
    // [n, 1] as well: Qwen2-MoE's shared-expert gate is a one-row linear layer.
    auto it = gguf_.tensors.find(name);
    const bool one_row =
        it != gguf_.tensors.end() && it->second.ne.size() == 2 && it->second.ne[1] == 1;
    auto t = Find(name, one_row ? 2 : 1);
    if (!t.ok()) return t.status();
    return ToFloatVector((*t)->dtype, (*t)->data, (*t)->ne[0]);
  }
  absl::StatusOr<std::vector<Matrix>> GetStackedMatrices(const std::string& name,
                                                         int experts) const override {
    auto t = Find(name, 3);
    if (!t.ok()) return t.status();
    if ((*t)->ne[2] != experts) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: tensor %s stacks %d experts, not %d",
                                                        path_, name, (*t)->ne[2], experts));
    }
    std::vector<Matrix> views;
    for (int e = 0; e < experts; ++e) {
      Matrix m = Matrix::Make((*t)->dtype, (*t)->ne[1], (*t)->ne[0], (*t)->data);
      m.data += static_cast<uint64_t>(e) * m.rows * m.row_bytes;  // the parser checked the size
      views.push_back(m);
    }
    return views;
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

// rope.scaling.type as llama.cpp reads it: absent or "none" is none, "linear" divides the
// positions by rope.scaling.factor; any other is UNIMPLEMENTED naming it.
absl::Status ReadRopeScaling(const GgufFile& gguf, const std::string& arch, const std::string& path,
                             RopeConfig* rope) {
  const std::string type = gguf.GetString(arch + ".rope.scaling.type").value_or("none");
  const double factor = gguf.GetFloat(arch + ".rope.scaling.factor")
                            .value_or(gguf.GetFloat(arch + ".rope.scale_linear").value_or(0));
  if (type == "none" || (type == "linear" && (factor == 0 || factor == 1))) return absl::OkStatus();
  if (type != "linear") {
    return absl::UnimplementedError(
        absl::StrFormat("%s: rope scaling type '%s' is not supported", path, type));
  }
  if (!std::isfinite(factor) || factor < 0 || factor > 1e6) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: rope scaling factor %g is out of range", path, factor));
  }
  rope->linear_factor = static_cast<float>(factor);
  return absl::OkStatus();
}

// Gemma's soft-capping, attention scale and sliding-window layers, as llama.cpp reads them: the
// scale is 1/sqrt(head_dim) except for the 27B models (46 layers of Gemma 2, 62 of Gemma 3),
// whose query_pre_attn_scalar is hidden / heads; GGUF does not record it.
absl::Status ReadGemmaHparams(const GgufFile& gguf, const std::string& arch,
                              const std::string& path, ModelConfig* c) {
  if (c->arch != Architecture::kGemma2 && c->arch != Architecture::kGemma3) return absl::OkStatus();
  const bool gemma2 = c->arch == Architecture::kGemma2;
  const bool big = c->layers == (gemma2 ? 46 : 62);
  c->attn_scale = 1.f / std::sqrt(static_cast<float>(big ? c->hidden / c->heads : c->head_dim));
  c->attn_softcap =
      gemma2 ? static_cast<float>(gguf.GetFloat(arch + ".attn_logit_softcapping").value_or(0))
             : 0.f;
  c->final_softcap =
      static_cast<float>(gguf.GetFloat(arch + ".final_logit_softcapping").value_or(0));
  const int64_t window =
      gguf.GetInt(arch + ".attention.sliding_window").value_or(gemma2 ? 4096 : 0);
  if (window < 0 || window > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: attention.sliding_window %d is out of range", path, window));
  }
  c->sliding_window = static_cast<int>(window);
  c->sliding_rope = c->rope;
  if (!gemma2) {  // local layers: their own base, no scaling
    c->sliding_rope.theta =
        static_cast<float>(gguf.GetFloat(arch + ".rope.freq_base_swa").value_or(10000));
    c->sliding_rope.linear_factor = 1.f;
  }
  if (c->sliding_window == 0) return absl::OkStatus();
  // attention.sliding_window_pattern: one flag per layer, or every n-th layer global.
  c->sliding_layers.assign(c->layers, false);
  const GgufValue* pattern = gguf.Find(arch + ".attention.sliding_window_pattern");
  if (pattern != nullptr && pattern->kind == GgufValue::Kind::kArray) {
    if (pattern->numbers.size() != static_cast<size_t>(c->layers)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: attention.sliding_window_pattern has %d flags for %d layers", path,
                          pattern->numbers.size(), c->layers));
    }
    for (int l = 0; l < c->layers; ++l) c->sliding_layers[l] = pattern->numbers[l] != 0;
    return absl::OkStatus();
  }
  const int64_t every =
      pattern != nullptr && pattern->kind == GgufValue::Kind::kInt ? pattern->i : (gemma2 ? 2 : 6);
  c->sliding_layers = SlidingEvery(c->layers, every);
  return absl::OkStatus();
}

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
  c.rope.interleaved = c.traits().gguf_rope_interleaved;
  if (auto s = ReadRopeScaling(*gguf, arch_name, path, &c.rope); !s.ok()) return s;
  if (auto it = gguf->tensors.find("rope_freqs.weight"); it != gguf->tensors.end()) {
    const GgufTensor& t = it->second;
    if (t.ne.size() != 1 || t.ne[0] != c.rope.rotary_dim / 2) {
      return error(absl::StrFormat("rope_freqs.weight has %d values, not rotary dimension / 2 = %d",
                                   t.ne.empty() ? 0 : t.ne[0], c.rope.rotary_dim / 2));
    }
    c.rope.freq_factors = ToFloatVector(t.dtype, t.data, t.ne[0]);
  }
  if (auto s = ReadGemmaHparams(*gguf, arch_name, path, &c); !s.ok()) return s;
  if (auto s = get_int("expert_count", &c.experts, false); !s.ok()) return s;
  if (c.experts > 0) {
    if (c.arch == Architecture::kLlama) c.arch = Architecture::kMixtral;  // llama.cpp's name
    if (gguf->tensors.count("blk.0.ffn_gate.0.weight") > 0) {
      return absl::UnimplementedError(absl::StrFormat(
          "%s: one tensor per expert (blk.N.ffn_gate.E.weight, llama.cpp's layout before its "
          "stacked ffn_gate_exps) is not supported: convert the model again",
          path));
    }
    if (!c.traits().moe) {
      return absl::UnimplementedError(
          absl::StrFormat("%s: experts in a %s model are not supported", path, arch_name));
    }
    if (auto s = get_int("expert_used_count", &c.experts_per_token, true); !s.ok()) return s;
    c.expert_intermediate = c.intermediate;
    if (auto s = get_int("expert_feed_forward_length", &c.expert_intermediate, false); !s.ok()) {
      return s;
    }
    if (auto s = get_int("expert_shared_feed_forward_length", &c.intermediate, false); !s.ok()) {
      return s;
    }
    c.norm_topk = c.traits().moe_norm_topk;
  } else if (c.traits().moe) {
    return error("a mixture-of-experts architecture without " + arch_name + ".expert_count");
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
