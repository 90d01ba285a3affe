// Hugging Face directories: config.json, model.safetensors or shards, tokenizer.json.
#include <sys/stat.h>

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

template <typename T>
absl::Status Field(const Json& j, const char* key, T* out, const std::string& path,
                   bool required = true) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrFormat("%s: missing \"%s\"", path, key));
  }
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"%s\" is not a number", path, key));
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

absl::Status ParseConfig(const Json& j, const std::string& path, ModelConfig* c) {
  const std::string type = j.value("model_type", "");
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
    if (auto s = Field(j, key, out, path); !s.ok()) return s;
  }
  c->kv_heads = c->heads;
  if (auto s = Field(j, "num_key_value_heads", &c->kv_heads, path, false); !s.ok()) return s;
  c->head_dim = c->heads > 0 ? c->hidden / c->heads : 0;
  if (auto s = Field(j, "head_dim", &c->head_dim, path, false); !s.ok()) return s;
  if (auto s = Field(j, "max_position_embeddings", &c->max_positions, path, false); !s.ok()) {
    return s;
  }
  if (auto s = Field(j, "rms_norm_eps", &c->norm_eps, path, false); !s.ok()) return s;
  if (auto s = Field(j, "rope_theta", &c->rope.theta, path, false); !s.ok()) return s;
  c->rope.rotary_dim = c->head_dim;
  if (c->arch == Architecture::kOlmo) {
    c->norm = NormKind::kLayerNormNoParams;
    c->norm_eps = 1e-5f;  // OlmoLayerNorm's fixed epsilon
    if (auto s = Field(j, "clip_qkv", &c->clip_qkv, path, false); !s.ok()) return s;
  }
  if (c->arch == Architecture::kPhi3) {
    float partial = 1.f;
    if (auto s = Field(j, "partial_rotary_factor", &partial, path, false); !s.ok()) return s;
    c->rope.rotary_dim = static_cast<int>(c->head_dim * partial);
  }
  auto rs = j.find("rope_scaling");
  if (rs != j.end() && !rs->is_null()) {
    const std::string kind = rs->value("rope_type", rs->value("type", ""));
    if (kind == "llama3") {
      c->rope.llama3_factor = rs->value("factor", 8.f);
      c->rope.llama3_low_freq_factor = rs->value("low_freq_factor", 1.f);
      c->rope.llama3_high_freq_factor = rs->value("high_freq_factor", 4.f);
      c->rope.llama3_original_max_positions = rs->value("original_max_position_embeddings", 8192);
    } else if (kind != "default") {
      return absl::UnimplementedError(
          absl::StrFormat("%s: rope_scaling type '%s' is not supported", path, kind));
    }
  }
  int bos = -1, eos = -1;
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) bos = j["bos_token_id"];
  if (j.contains("eos_token_id") && j["eos_token_id"].is_number_integer()) eos = j["eos_token_id"];
  c->bos_token = bos;
  c->eos_token = eos;
  return absl::OkStatus();
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
    if (t->shape.size() != 1) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor '%s' is not 1-D", name));
    }
    return ToFloatVector(t->dtype, t->data, t->shape[0]);
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
  // Tokenizer: BOS handling as the tokenizer's post-processor says.
  const std::string tok_path = dir + "/tokenizer.json";
  if (Exists(tok_path)) {
    auto tj = ReadJson(tok_path);
    if (!tj.ok()) return tj.status();
    const Json& post = (*tj).value("post_processor", Json());
    if (post.is_object() && post.value("type", "") == "TemplateProcessing") {
      const Json& single = post.value("single", Json::array());
      if (!single.empty() && single[0].contains("SpecialToken")) {
        const std::string bos = single[0]["SpecialToken"].value("id", "");
        const Json& st = post.value("special_tokens", Json::object());
        if (st.contains(bos) && st[bos].contains("ids") && !st[bos]["ids"].empty()) {
          c.add_bos = true;
          c.bos_token = st[bos]["ids"][0].get<int>();
        }
      }
    }
    auto tok = LoadHfTokenizer(tok_path, c.bos_token, c.eos_token);
    if (!tok.ok()) return tok.status();
    model->tokenizer = std::move(*tok);
  }
  if (auto s = ValidateModel(*model); !s.ok()) return s;
  return model;
}

}  // namespace superweight
