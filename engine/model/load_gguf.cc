// GGUF files as llama.cpp writes them. Tensor names follow llama.cpp's table (blk.N.ffn_down...).
#include "absl/strings/str_format.h"
#include "engine/formats/gguf.h"
#include "engine/model/loaders.h"

namespace superweight {

absl::StatusOr<std::unique_ptr<Model>> OpenGgufModel(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  auto gguf = ParseGguf((*file)->bytes(), path);
  if (!gguf.ok()) return gguf.status();
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

  auto matrix = [&](const std::string& name) -> absl::StatusOr<Matrix> {
    auto it = gguf->tensors.find(name);
    if (it == gguf->tensors.end()) return error("missing tensor " + name);
    const GgufTensor& t = it->second;
    if (t.ne.size() != 2) return error("tensor " + name + " is not 2-D");
    return Matrix::Make(t.dtype, t.ne[1], t.ne[0], t.data);
  };
  auto vector = [&](const std::string& name) -> absl::StatusOr<std::vector<float>> {
    auto it = gguf->tensors.find(name);
    if (it == gguf->tensors.end()) return error("missing tensor " + name);
    const GgufTensor& t = it->second;
    if (t.ne.size() != 1) return error("tensor " + name + " is not 1-D");
    return ToFloatVector(t.dtype, t.data, t.ne[0]);
  };

  auto embed = matrix("token_embd.weight");
  if (!embed.ok()) return embed.status();
  model->embed = *embed;
  c.vocab = static_cast<int>(embed->rows);
  model->lm_head = model->embed;
  if (gguf->tensors.count("output.weight")) {
    auto head = matrix("output.weight");
    if (!head.ok()) return head.status();
    model->lm_head = *head;
  }
  if (c.norm == NormKind::kRms) {
    auto n = vector("output_norm.weight");
    if (!n.ok()) return n.status();
    model->final_norm = *n;
  }
  if (auto s = ValidateConfig(c, path); !s.ok()) return s;
  model->layers.resize(c.layers);
  for (int l = 0; l < c.layers; ++l) {
    LayerWeights& w = model->layers[l];
    const std::string p = absl::StrFormat("blk.%d.", l);
    auto set = [&](const char* name, LinearKind kind) -> absl::Status {
      auto m = matrix(p + name);
      if (!m.ok()) return m.status();
      w.Get(kind) = *m;
      return absl::OkStatus();
    };
    if (c.arch == Architecture::kPhi3) {
      auto qkv = matrix(p + "attn_qkv.weight");
      auto gate_up = matrix(p + "ffn_up.weight");  // gate rows first, then up
      if (!qkv.ok()) return qkv.status();
      if (!gate_up.ok()) return gate_up.status();
      if (auto st = SplitFusedProjections(*qkv, *gate_up, c, l, &w); !st.ok()) {
        return error(std::string(st.message()));
      }
    } else {
      for (auto [name, kind] : {std::pair{"attn_q.weight", LinearKind::kQ},
                                {"attn_k.weight", LinearKind::kK},
                                {"attn_v.weight", LinearKind::kV},
                                {"ffn_gate.weight", LinearKind::kGate},
                                {"ffn_up.weight", LinearKind::kUp}}) {
        if (auto s = set(name, kind); !s.ok()) return s;
      }
    }
    if (auto s = set("attn_output.weight", LinearKind::kO); !s.ok()) return s;
    if (auto s = set("ffn_down.weight", LinearKind::kDown); !s.ok()) return s;
    if (c.norm == NormKind::kRms) {
      auto a = vector(p + "attn_norm.weight");
      auto f = vector(p + "ffn_norm.weight");
      if (!a.ok()) return a.status();
      if (!f.ok()) return f.status();
      w.attn_norm = *a;
      w.ffn_norm = *f;
    }
    if (gguf->tensors.count(p + "attn_q.bias")) {
      auto qb = vector(p + "attn_q.bias");
      auto kb = vector(p + "attn_k.bias");
      auto vb = vector(p + "attn_v.bias");
      if (!qb.ok()) return qb.status();
      if (!kb.ok()) return kb.status();
      if (!vb.ok()) return vb.status();
      w.q_bias = *qb;
      w.k_bias = *kb;
      w.v_bias = *vb;
    }
  }
  auto tok = LoadGgufTokenizer(*gguf, path);
  if (!tok.ok()) return tok.status();
  model->tokenizer = std::move(*tok);
  c.bos_token = model->tokenizer->bos_id();
  c.eos_token = model->tokenizer->eos_id();
  const bool spm = gguf->GetString("tokenizer.ggml.model").value_or("") == "llama";
  c.add_bos = gguf->GetBool("tokenizer.ggml.add_bos_token").value_or(spm);
  if (auto s = ValidateModel(*model); !s.ok()) return s;
  return model;
}

}  // namespace superweight
