// Hugging Face directories: config.json, model.safetensors or shards, tokenizer.json.
#include <sys/stat.h>

#include <climits>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_format.h"
#include "engine/formats/safetensors.h"
#include "engine/model/loaders.h"
#include "engine/model/tensor_names.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

using Json = nlohmann::json;

absl::StatusOr<Json> ReadJson(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  const char* begin = reinterpret_cast<const char*>((*file)->data());
  Json j = Json::parse(begin, begin + (*file)->size(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a JSON object", path));
  }
  return j;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// The config's fields as the JSON holds them: a field of the wrong JSON type, or a number its
// C++ type cannot hold, is INVALID_ARGUMENT naming it (never a nlohmann exception, a silent
// wrap-around or an undefined float-to-int conversion). Absent or null: *out unchanged, unless
// required.
const Json* Member(const Json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

absl::Status Missing(const std::string& path, const char* key) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: missing \"%s\"", path, key));
}

// A whole number in int's range (written 128 or 128.0).
absl::Status IntField(const Json& j, const char* key, int* out, const std::string& path,
                      bool required = true) {
  const Json* v = Member(j, key);
  if (v == nullptr) return required ? Missing(path, key) : absl::OkStatus();
  const bool whole = v->is_number_integer() ||
                     (v->is_number_float() && std::trunc(v->get<double>()) == v->get<double>());
  if (!whole) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: \"%s\" is not a whole number", path, key));
  }
  const bool fits = v->is_number_unsigned() ? v->get<uint64_t>() <= INT_MAX
                    : v->is_number_integer()
                        ? v->get<int64_t>() >= INT_MIN && v->get<int64_t>() <= INT_MAX
                        : v->get<double>() >= INT_MIN && v->get<double>() <= INT_MAX;
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"%s\" is out of range", path, key));
  }
  *out = v->is_number_float() ? static_cast<int>(v->get<double>())
                              : static_cast<int>(v->get<int64_t>());
  return absl::OkStatus();
}

// Any number a float holds (validation decides what is sensible).
absl::Status FloatField(const Json& j, const char* key, float* out, const std::string& path,
                        bool required = true) {
  const Json* v = Member(j, key);
  if (v == nullptr) return required ? Missing(path, key) : absl::OkStatus();
  if (!v->is_number()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"%s\" is not a number", path, key));
  }
  const double d = v->get<double>();
  if (std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"%s\" is out of range", path, key));
  }
  *out = static_cast<float>(d);
  return absl::OkStatus();
}

absl::Status StringField(const Json& j, const char* key, std::string* out,
                         const std::string& path) {
  const Json* v = Member(j, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"%s\" is not a string", path, key));
  }
  *out = v->get<std::string>();
  return absl::OkStatus();
}

// A special token id: an integer in range is used; anything else (Llama 3 lists several EOS ids)
// means none.
absl::Status TokenIdField(const Json& j, const char* key, int* out, const std::string& path) {
  const Json* v = Member(j, key);
  if (v == nullptr || !v->is_number_integer()) return absl::OkStatus();
  return IntField(j, key, out, path);
}

// Gemma 2 and 3's attention: query_pre_attn_scalar, soft-capping, sliding-window layers (from
// layer_types, else Gemma 2's every other layer and Gemma 3's sliding_window_pattern) and Gemma
// 3's local rope base, as transformers reads them.
absl::Status ParseGemmaConfig(const Json& j, const std::string& path, ModelConfig* c) {
  const bool gemma2 = c->arch == Architecture::kGemma2;
  std::string activation = "gelu_pytorch_tanh";
  if (auto s = StringField(j, "hidden_activation", &activation, path); !s.ok()) return s;
  if (activation != "gelu_pytorch_tanh" && activation != "gelu_tanh") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: hidden_activation '%s' is not supported (gelu_pytorch_tanh is)", path, activation));
  }
  float scalar = static_cast<float>(c->head_dim);
  if (auto s = FloatField(j, "query_pre_attn_scalar", &scalar, path, false); !s.ok()) return s;
  if (!(scalar > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: query_pre_attn_scalar %g is not positive", path, scalar));
  }
  c->attn_scale = 1.f / std::sqrt(scalar);
  if (auto s = FloatField(j, "attn_logit_softcapping", &c->attn_softcap, path, false); !s.ok()) {
    return s;
  }
  if (auto s = FloatField(j, "final_logit_softcapping", &c->final_softcap, path, false); !s.ok()) {
    return s;
  }
  if (!(c->attn_softcap >= 0 && c->final_softcap >= 0)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: a soft-capping is negative", path));
  }
  c->sliding_rope = c->rope;
  if (!gemma2) {
    c->sliding_rope.linear_factor = 1.f;
    c->sliding_rope.theta = 10000.f;
    if (auto s = FloatField(j, "rope_local_base_freq", &c->sliding_rope.theta, path, false);
        !s.ok()) {
      return s;
    }
  }
  c->sliding_window = gemma2 ? 4096 : 0;
  if (auto s = IntField(j, "sliding_window", &c->sliding_window, path, false); !s.ok()) return s;
  if (c->sliding_window < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: sliding_window is negative", path));
  }
  c->sliding_layers.assign(c->layers, false);
  if (const Json* types = Member(j, "layer_types")) {
    if (!types->is_array() || types->size() != static_cast<size_t>(c->layers)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: layer_types is not a list of %d layer types", path, c->layers));
    }
    for (int l = 0; l < c->layers; ++l) {
      const Json& t = (*types)[l];
      if (!t.is_string() || (t.get<std::string>() != "sliding_attention" &&
                             t.get<std::string>() != "full_attention")) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: layer_types[%d] is neither sliding_attention nor full_attention", path, l));
      }
      c->sliding_layers[l] = t.get<std::string>() == "sliding_attention";
    }
    return absl::OkStatus();
  }
  int every = gemma2 ? 2 : 6;
  if (!gemma2) {
    if (auto s = IntField(j, "sliding_window_pattern", &every, path, false); !s.ok()) return s;
  }
  c->sliding_layers = SlidingEvery(c->layers, every);
  return absl::OkStatus();
}

// The experts of Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE configs, as transformers reads them.
// Every layer must be sparse: dense layers among them (decoder_sparse_step, mlp_only_layers) are
// UNIMPLEMENTED.
absl::Status ParseMoeConfig(const Json& j, const std::string& path, ModelConfig* c) {
  const bool mixtral = c->arch == Architecture::kMixtral;
  if (auto s = IntField(j, mixtral ? "num_local_experts" : "num_experts", &c->experts, path);
      !s.ok()) {
    return s;
  }
  if (auto s = IntField(j, "num_experts_per_tok", &c->experts_per_token, path); !s.ok()) return s;
  c->expert_intermediate = c->intermediate;
  if (auto s = IntField(j, "moe_intermediate_size", &c->expert_intermediate, path, false);
      !s.ok()) {
    return s;
  }
  if (c->traits().shared_expert) {
    if (auto s = IntField(j, "shared_expert_intermediate_size", &c->intermediate, path); !s.ok()) {
      return s;
    }
  }
  // Mixtral always renormalizes; the others as norm_topk_prob says (transformers' default: no).
  c->norm_topk = mixtral;
  if (const Json* norm = Member(j, "norm_topk_prob")) {
    if (!norm->is_boolean()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: \"norm_topk_prob\" is not a boolean", path));
    }
    c->norm_topk = norm->get<bool>();
  }
  int sparse_step = 1;
  if (auto s = IntField(j, "decoder_sparse_step", &sparse_step, path, false); !s.ok()) return s;
  const Json* dense = Member(j, "mlp_only_layers");
  if (sparse_step != 1 || (dense != nullptr && !(dense->is_array() && dense->empty()))) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: dense layers among the sparse ones (decoder_sparse_step, mlp_only_layers) are not "
        "supported",
        path));
  }
  return absl::OkStatus();
}

absl::Status ParseConfig(const Json& j, const std::string& path, ModelConfig* c) {
  std::string type;
  if (auto s = StringField(j, "model_type", &type, path); !s.ok()) return s;
  if (type == "gemma3") {  // transformers' name of the multimodal model; GGUF's of the text one
    return absl::UnimplementedError(absl::StrFormat(
        "%s: model_type 'gemma3' (Gemma3ForConditionalGeneration, with a vision tower) is not "
        "supported; its text model, model_type 'gemma3_text', is",
        path));
  }
  auto arch = ArchitectureFromName(type);
  if (!arch.ok()) {
    return absl::Status(arch.status().code(),
                        absl::StrFormat("%s: %s", path, arch.status().message()));
  }
  c->arch = *arch;
  for (auto [key, out] : {std::pair{"hidden_size", &c->hidden},
                          {"intermediate_size", &c->intermediate},
                          {"num_hidden_layers", &c->layers},
                          {"num_attention_heads", &c->heads},
                          {"vocab_size", &c->vocab}}) {
    if (auto s = IntField(j, key, out, path); !s.ok()) return s;
  }
  c->kv_heads = c->heads;
  if (auto s = IntField(j, "num_key_value_heads", &c->kv_heads, path, false); !s.ok()) return s;
  c->head_dim = c->heads > 0 ? c->hidden / c->heads : 0;
  if (auto s = IntField(j, "head_dim", &c->head_dim, path, false); !s.ok()) return s;
  if (auto s = IntField(j, "max_position_embeddings", &c->max_positions, path, false); !s.ok()) {
    return s;
  }
  if (auto s = FloatField(j, "rms_norm_eps", &c->norm_eps, path, false); !s.ok()) return s;
  if (auto s = FloatField(j, "rope_theta", &c->rope.theta, path, false); !s.ok()) return s;
  c->rope.rotary_dim = c->head_dim;
  if (c->arch == Architecture::kOlmoe) {
    if (auto s = FloatField(j, "clip_qkv", &c->clip_qkv, path, false); !s.ok()) return s;
  }
  if (c->arch == Architecture::kOlmo) {
    c->norm = NormKind::kLayerNormNoParams;
    c->norm_eps = 1e-5f;  // OlmoLayerNorm's fixed epsilon
    if (auto s = FloatField(j, "clip_qkv", &c->clip_qkv, path, false); !s.ok()) return s;
  }
  if (c->arch == Architecture::kPhi3) {
    float partial = 1.f;
    if (auto s = FloatField(j, "partial_rotary_factor", &partial, path, false); !s.ok()) return s;
    if (!(partial > 0 && partial <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: partial_rotary_factor %g is not in (0, 1]", path, partial));
    }
    c->rope.rotary_dim = static_cast<int>(static_cast<double>(c->head_dim) * partial);
  }
  if (const Json* rs = Member(j, "rope_scaling")) {
    if (!rs->is_object()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: rope_scaling is not an object", path));
    }
    std::string kind;
    if (auto s = StringField(*rs, "type", &kind, path); !s.ok()) return s;
    if (auto s = StringField(*rs, "rope_type", &kind, path); !s.ok()) return s;
    if (kind == "llama3") {
      RopeConfig& r = c->rope;
      r.llama3_factor = 8.f;
      for (auto [key, out] : {std::pair{"factor", &r.llama3_factor},
                              {"low_freq_factor", &r.llama3_low_freq_factor},
                              {"high_freq_factor", &r.llama3_high_freq_factor}}) {
        if (auto s = FloatField(*rs, key, out, path, false); !s.ok()) return s;
      }
      if (auto s = IntField(*rs, "original_max_position_embeddings",
                            &r.llama3_original_max_positions, path, false);
          !s.ok()) {
        return s;
      }
    } else if (kind == "linear") {
      if (auto s = FloatField(*rs, "factor", &c->rope.linear_factor, path); !s.ok()) return s;
      if (!(c->rope.linear_factor > 0 && c->rope.linear_factor <= 1e6)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: rope_scaling factor %g is not in (0, 1e6]", path, c->rope.linear_factor));
      }
    } else if (kind != "default") {
      return absl::UnimplementedError(
          absl::StrFormat("%s: rope_scaling type '%s' is not supported", path, kind));
    }
  }
  if (c->arch == Architecture::kGemma2 || c->arch == Architecture::kGemma3) {
    if (auto s = ParseGemmaConfig(j, path, c); !s.ok()) return s;
  }
  if (c->traits().moe) {
    if (auto s = ParseMoeConfig(j, path, c); !s.ok()) return s;
  }
  if (c->arch == Architecture::kMistral || c->arch == Architecture::kMixtral) {
    // Every layer slides where the config gives a window (Mistral 7B v0.1: 4096).
    if (auto s = IntField(j, "sliding_window", &c->sliding_window, path, false); !s.ok()) return s;
    if (c->sliding_window < 0) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: sliding_window is negative", path));
    }
    c->sliding_rope = c->rope;
    if (c->sliding_window > 0) c->sliding_layers.assign(c->layers, true);
  }
  if (auto s = TokenIdField(j, "bos_token_id", &c->bos_token, path); !s.ok()) return s;
  if (auto s = TokenIdField(j, "eos_token_id", &c->eos_token, path); !s.ok()) return s;
  return absl::OkStatus();
}

// The BOS a tokenizer.json's post-processor adds: a TemplateProcessing whose single-sequence
// template starts with a special token adds that token's first id. -1: none.
absl::StatusOr<int> TemplateBos(const Json& tokenizer, const std::string& path) {
  const Json* post = Member(tokenizer, "post_processor");
  std::string type;
  if (post == nullptr || !StringField(*post, "type", &type, path).ok() ||
      type != "TemplateProcessing") {
    return -1;
  }
  const Json* single = Member(*post, "single");
  if (single == nullptr || !single->is_array() || single->empty()) return -1;
  const Json* special = Member((*single)[0], "SpecialToken");
  std::string name;
  if (special == nullptr || !StringField(*special, "id", &name, path).ok()) return -1;
  const Json* tokens = Member(*post, "special_tokens");
  const Json* token = tokens != nullptr ? Member(*tokens, name.c_str()) : nullptr;
  const Json* ids = token != nullptr ? Member(*token, "ids") : nullptr;
  if (ids == nullptr || !ids->is_array() || ids->empty()) return -1;
  const Json& first = (*ids)[0];
  if (!first.is_number_integer() ||
      (first.is_number_unsigned() ? first.get<uint64_t>() > INT_MAX
                                  : first.get<int64_t>() < 0 || first.get<int64_t>() > INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: post_processor's special token '%s' has no valid first id", path, name));
  }
  return static_cast<int>(first.get<int64_t>());
}

class TensorSet : public TensorSource {
 public:
  absl::Status Add(std::shared_ptr<const MappedFile> file) {
    auto parsed = ParseSafetensors(file->bytes(), file->path());
    if (!parsed.ok()) return parsed.status();
    for (auto& [name, t] : parsed->tensors) tensors_[name] = {t, file->path()};
    for (auto& [k, v] : parsed->metadata) metadata_[k] = v;
    return absl::OkStatus();
  }
  bool Has(const std::string& name) const override { return Find(name) != nullptr; }
  const SafetensorsTensor* Find(const std::string& name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second.first;
  }
  absl::StatusOr<Matrix> GetMatrix(const std::string& name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::InvalidArgumentError(absl::StrFormat("missing tensor '%s'", name));
    }
    const SafetensorsTensor& t = it->second.first;
    if (t.shape.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s' is not 2-D", it->second.second, name));
    }
    return Matrix::Make(t.dtype, t.shape[0], t.shape[1], t.data);
  }
  absl::StatusOr<std::vector<float>> GetVector(const std::string& name) const override {
    const SafetensorsTensor* t = Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat("missing tensor '%s'", name));
    }
    // [1, n] as well: Qwen2-MoE's shared_expert_gate is a one-row linear layer.
    if (t->shape.size() != 1 && !(t->shape.size() == 2 && t->shape[0] == 1)) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor '%s' is not 1-D", name));
    }
    return ToFloatVector(t->dtype, t->data, t->shape.back());
  }

 private:
  std::map<std::string, std::pair<SafetensorsTensor, std::string>> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> OpenHuggingFaceModel(const std::string& dir) {
  auto model = std::make_unique<Model>();
  model->path = dir;
  model->format = ModelFormat::kHuggingFace;
  model->name = dir.substr(dir.find_last_of('/') + 1);
  auto config = ReadJson(dir + "/config.json");
  if (!config.ok()) return config.status();
  if (auto s = ParseConfig(*config, dir + "/config.json", &model->config); !s.ok()) return s;
  if (auto s = ValidateConfig(model->config, dir + "/config.json"); !s.ok()) return s;
  ModelConfig& c = model->config;

  // Weights: one file, or the shards an index names.
  std::vector<std::string> shards;
  if (Exists(dir + "/model.safetensors")) {
    shards.push_back(dir + "/model.safetensors");
  } else if (Exists(dir + "/model.safetensors.index.json")) {
    auto index = ReadJson(dir + "/model.safetensors.index.json");
    if (!index.ok()) return index.status();
    const Json& map = (*index).value("weight_map", Json::object());
    std::set<std::string> files;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it.value().is_string()) continue;
      const std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f == "..") {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: shard name '%s' leaves the model directory", dir, f));
      }
      files.insert(f);
    }
    for (const auto& f : files) shards.push_back(dir + "/" + f);
  } else {
    return absl::NotFoundError(absl::StrFormat("%s: no model.safetensors or index", dir));
  }
  TensorSet tensors;
  for (const auto& shard : shards) {
    auto file = MappedFile::Open(shard);
    if (!file.ok()) return file.status();
    if (auto s = tensors.Add(*file); !s.ok()) return s;
    model->files.push_back(*file);
  }
  auto wrap = [&](absl::Status s) {
    return s.ok() ? s : absl::Status(s.code(), absl::StrFormat("%s: %s", dir, s.message()));
  };
  // Tied embeddings may be stored under either name.
  const std::string embed_name =
      TensorName(*FindRole(c.arch, TensorRole::kTokenEmbedding), ModelFormat::kHuggingFace, -1);
  const std::string head_name =
      TensorName(*FindRole(c.arch, TensorRole::kOutput), ModelFormat::kHuggingFace, -1);
  const bool has_embed = tensors.Has(embed_name);
  const bool has_head = tensors.Has(head_name);
  auto embed = tensors.GetMatrix(has_embed ? embed_name : head_name);
  if (!embed.ok()) return wrap(embed.status());
  model->embed = *embed;
  model->lm_head = model->embed;
  if (has_head && has_embed) {
    auto head = tensors.GetMatrix(head_name);
    if (!head.ok()) return wrap(head.status());
    model->lm_head = *head;
  }
  if (auto s = FillWeightsFromTable(tensors, ModelFormat::kHuggingFace, model.get()); !s.ok()) {
    return wrap(s);
  }
  if (c.traits().hf_norm_plus_one) {  // held as llama.cpp holds them: 1 + w
    for (int l = -1; l < c.layers; ++l) {
      for (const TensorNaming& naming : TensorTable(c.arch)) {
        if (naming.per_layer != (l >= 0) || !IsNormRole(naming.role)) continue;
        if (std::vector<float>* v = VectorOfRole(naming.role, l, model.get())) {
          for (float& w : *v) w += 1.f;
        }
      }
    }
  }
  // Tokenizer: BOS handling as the tokenizer's post-processor says.
  const std::string tok_path = dir + "/tokenizer.json";
  if (Exists(tok_path)) {
    auto tj = ReadJson(tok_path);
    if (!tj.ok()) return tj.status();
    auto bos = TemplateBos(*tj, tok_path);
    if (!bos.ok()) return bos.status();
    if (*bos >= 0) {
      c.add_bos = true;
      c.bos_token = *bos;
    }
    auto tok = LoadHfTokenizer(tok_path, c.bos_token, c.eos_token);
    if (!tok.ok()) return tok.status();
    model->tokenizer = std::move(*tok);
  }
  if (auto s = ValidateModel(*model); !s.ok()) return s;
  return model;
}

}  // namespace superweight
