#include "engine/export/export_hf.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/export/output_file.h"
#include "engine/export/safetensors_writer.h"
#include "engine/model/tensor_names.h"
#include "engine/runtime/forward.h"
#include "engine/util/publish.h"
#include "engine/util/umask.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

// ordered_json keeps a copied config.json's keys where its authors put them.
using OrderedJson = nlohmann::ordered_json;
using RowSource = SafetensorsWriter::RowSource;

// What transformers' tokenizer and generation loaders read from a model directory.
constexpr const char* kTokenizerFiles[] = {"tokenizer.json",
                                           "tokenizer_config.json",
                                           "special_tokens_map.json",
                                           "generation_config.json",
                                           "tokenizer.model",
                                           "vocab.json",
                                           "merges.txt",
                                           "added_tokens.json"};

// Row `row` of a q/k projection in Hugging Face's rotate-half order, which pairs dimension i of
// a head with i + head_dim / 2, is the stored row of the interleaved-pair order (2i with 2i + 1)
// that llama.cpp's converter made from it: its permute() sent rotate-half row s * half + i
// (s = 0, 1) to row 2i + s of the same head.
int64_t InterleavedRowOfRotateHalfRow(int64_t row, int head_dim) {
  const int64_t head = row / head_dim, within = row % head_dim, half = head_dim / 2;
  const int64_t pair = within % half, side = within / half;
  return head * head_dim + 2 * pair + side;
}

// A matrix's rows, in rotate-half order where rope_head_dim > 0 (its rows interleaved).
RowSource MatrixRows(const Matrix& m, int rope_head_dim) {
  return [m, rope_head_dim](int64_t row, float* values) {
    m.RowToFloat(rope_head_dim > 0 ? InterleavedRowOfRotateHalfRow(row, rope_head_dim) : row,
                 values);
  };
}

// A vector as a 1-D tensor's one row (a q/k bias reordered like its projection's rows), less
// `minus` (1 for Gemma's norms, which checkpoints store as w for 1 + w).
RowSource VectorValues(const std::vector<float>* vector, int rope_head_dim, float minus) {
  return [vector, rope_head_dim, minus](int64_t, float* values) {
    for (size_t i = 0; i < vector->size(); ++i) {
      const int64_t from = rope_head_dim > 0 ? InterleavedRowOfRotateHalfRow(i, rope_head_dim) : i;
      values[i] = (*vector)[from] - minus;
    }
  };
}

// Several matrices' rows one after another: Phi-3's fused projections, which the loader split
// into row slices, put back together.
struct RowBlock {
  int64_t rows;
  RowSource source;
};
RowSource StackedRows(std::vector<RowBlock> blocks) {
  return [blocks = std::move(blocks)](int64_t row, float* values) {
    for (const RowBlock& block : blocks) {
      if (row < block.rows) return block.source(row, values);
      row -= block.rows;
    }
  };
}

// Every tensor of the architecture's table, by its Hugging Face name.
absl::Status AddModelTensors(const Model& model, bool tied, SafetensorsWriter* writer) {
  const ModelConfig& c = model.config;
  if (c.rope.interleaved && (c.rope.rotary_dim != c.head_dim || c.head_dim % 2 != 0)) {
    return absl::UnimplementedError(
        "partial rotary embeddings in interleaved-pair order have no Hugging Face equivalent");
  }
  const int rope_head_dim = c.rope.interleaved ? c.head_dim : 0;
  const int64_t q_rows = int64_t{c.heads} * c.head_dim;
  const int64_t kv_rows = int64_t{c.kv_heads} * c.head_dim;
  auto check_matrix = [](const std::string& name, const Matrix& m, int64_t cols) {
    if (m.data == nullptr || m.cols != cols) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the model has no such matrix of %d columns", name, cols));
    }
    return absl::OkStatus();
  };
  auto add_matrix = [&](const std::string& name, const Matrix& m, int unpermute_head_dim) {
    if (auto s = check_matrix(name, m, m.cols); !s.ok()) return s;
    return writer->AddTensor(name, {m.rows, m.cols}, MatrixRows(m, unpermute_head_dim));
  };
  auto add_vector = [&](const std::string& name, const std::vector<float>& v, int64_t size,
                        int unpermute_head_dim, float minus) {
    if (static_cast<int64_t>(v.size()) != size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the model holds %d values, not %d", name, v.size(), size));
    }
    return writer->AddTensor(name, {size}, VectorValues(&v, unpermute_head_dim, minus));
  };
  const bool per_head_qk_norm = c.traits().qk_norm == QkNorm::kPerHead;
  // A vector role's size and the rows of its projection it is reordered like.
  auto vector_shape = [&](TensorRole role) -> std::pair<int64_t, int> {
    switch (role) {
      case TensorRole::kAttnQBias:
        return {q_rows, rope_head_dim};
      case TensorRole::kAttnKBias:
        return {kv_rows, rope_head_dim};
      case TensorRole::kAttnVBias:
        return {kv_rows, 0};
      case TensorRole::kAttnQNorm:
        return {per_head_qk_norm ? c.head_dim : q_rows, 0};
      case TensorRole::kAttnKNorm:
        return {per_head_qk_norm ? c.head_dim : kv_rows, 0};
      default:
        return {c.hidden, 0};
    }
  };
  // Row blocks of one layer's fused tensor, all with the same columns.
  auto add_stacked = [&](const std::string& name,
                         const std::vector<std::pair<Matrix, int>>& parts) {
    std::vector<RowBlock> blocks;
    int64_t rows = 0;
    for (const auto& [m, unpermute_head_dim] : parts) {
      if (auto s = check_matrix(name, m, parts.front().first.cols); !s.ok()) return s;
      blocks.push_back({m.rows, MatrixRows(m, unpermute_head_dim)});
      rows += m.rows;
    }
    return writer->AddTensor(name, {rows, parts.front().first.cols},
                             StackedRows(std::move(blocks)));
  };

  for (int layer = -1; layer < c.layers; ++layer) {
    for (const TensorNaming& naming : TensorTable(c.arch)) {
      if (naming.per_layer != (layer >= 0)) continue;
      const std::string name = TensorName(naming, ModelFormat::kHuggingFace, layer);
      const LayerWeights* w = layer >= 0 ? &model.layers[layer] : nullptr;
      absl::Status s;
      switch (naming.role) {
        case TensorRole::kTokenEmbedding:
          s = add_matrix(name, model.embed, 0);
          break;
        case TensorRole::kOutput:
          if (!tied) s = add_matrix(name, model.lm_head, 0);
          break;
        case TensorRole::kFfnRouter:
          s = add_matrix(name, w->router, 0);
          break;
        case TensorRole::kExpertGate:
        case TensorRole::kExpertUp:
        case TensorRole::kExpertDown:
          for (int e = 0; e < static_cast<int>(w->experts.size()) && s.ok(); ++e) {
            s = add_matrix(TensorName(naming, ModelFormat::kHuggingFace, layer, e),
                           *w->Find(*ExpertKindOfRole(naming.role), e), 0);
          }
          break;
        case TensorRole::kSharedExpertGate:  // a one-row linear layer in transformers
          if (w->shared_expert_gate.size() != static_cast<size_t>(c.hidden)) {
            s = absl::InvalidArgumentError(absl::StrFormat("%s: the model holds none", name));
          } else {
            s = writer->AddTensor(name, {1, c.hidden},
                                  VectorValues(&w->shared_expert_gate, 0, 0.f));
          }
          break;
        case TensorRole::kAttnQkv:
          s = add_stacked(name, {{w->Get(LinearKind::kQ), rope_head_dim},
                                 {w->Get(LinearKind::kK), rope_head_dim},
                                 {w->Get(LinearKind::kV), 0}});
          break;
        case TensorRole::kFfnGateUp:
          s = add_stacked(name, {{w->Get(LinearKind::kGate), 0}, {w->Get(LinearKind::kUp), 0}});
          break;
        default:
          if (const std::vector<float>* v = VectorOfRole(naming.role, layer, model)) {
            const auto [size, unpermute_head_dim] = vector_shape(naming.role);
            const bool offset = c.traits().hf_norm_plus_one && IsNormRole(naming.role);
            s = add_vector(name, *v, size, unpermute_head_dim, offset ? 1.f : 0.f);
          } else if (auto kind = LinearKindOfRole(naming.role)) {
            const bool rope_rows = *kind == LinearKind::kQ || *kind == LinearKind::kK;
            s = add_matrix(name, w->Get(*kind), rope_rows ? rope_head_dim : 0);
          } else {
            s = absl::InternalError(absl::StrFormat("%s: no export for its role", name));
          }
          break;
      }
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

// The shortest decimal that reads back as the same float (1e-05, not 9.999999747378752e-06).
double ShortestDecimal(float value) {
  for (int digits = 6; digits < 9; ++digits) {
    const double candidate = std::strtod(absl::StrFormat("%.*g", digits, value).c_str(), nullptr);
    if (static_cast<float>(candidate) == value) return candidate;
  }
  return value;
}

// The Llama 3 scaling (transformers' "llama3" rope_scaling) whose frequencies a GGUF's rope_freqs
// divisors give, as llama.cpp's converter computes them from it: the factor is the largest
// divisor; Meta's low and high frequency factors (1 and 4) and a power-of-two original context
// are tried. None where no candidate gives every divisor within 1e-5.
std::optional<RopeConfig> Llama3ScalingOfFactors(const RopeConfig& stored) {
  RopeConfig plain = stored;
  plain.freq_factors.clear();
  const std::vector<float> base = InverseFrequencies(plain);
  const float factor = *std::max_element(stored.freq_factors.begin(), stored.freq_factors.end());
  for (int original = 16; original <= (1 << 22); original *= 2) {
    RopeConfig candidate = plain;
    candidate.llama3_factor = factor;
    candidate.llama3_low_freq_factor = 1.f;
    candidate.llama3_high_freq_factor = 4.f;
    candidate.llama3_original_max_positions = original;
    const std::vector<float> scaled = InverseFrequencies(candidate);
    bool fits = true;
    for (size_t i = 0; i < base.size() && fits; ++i) {
      fits =
          std::fabs(base[i] / scaled[i] - stored.freq_factors[i]) <= 1e-5f * stored.freq_factors[i];
    }
    if (fits) return candidate;
  }
  return std::nullopt;
}

// config.json for a model that came without one, in transformers' field names.
absl::StatusOr<OrderedJson> SynthesizedConfig(const ModelConfig& c) {
  const ArchitectureTraits& names = c.traits();
  if (!names.hf_config_has_head_dim && int64_t{c.heads} * c.head_dim != c.hidden) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s configs derive head_dim from hidden_size / num_attention_heads, and %d != %d / %d",
        names.hf_model_type, c.head_dim, c.hidden, c.heads));
  }
  if (c.rope.llama3_factor > 0 && c.arch != Architecture::kLlama) {
    return absl::UnimplementedError(absl::StrFormat(
        "Llama 3 rope scaling on a %s model has no Hugging Face config", names.hf_model_type));
  }
  RopeConfig rope = c.rope;
  if (!rope.freq_factors.empty()) {
    std::optional<RopeConfig> llama3 = Llama3ScalingOfFactors(rope);
    if (!llama3.has_value()) {
      return absl::UnimplementedError(
          "per-dimension rope frequency factors (a GGUF's rope_freqs) that are no Llama 3 "
          "scaling have no Hugging Face config");
    }
    rope = *llama3;
  }
  if (c.attn_softcap > 0 && c.arch != Architecture::kGemma2) {
    return absl::UnimplementedError(absl::StrFormat(
        "attention soft-capping on a %s model has no Hugging Face config", names.hf_model_type));
  }
  OrderedJson j = OrderedJson::object();
  j["architectures"] = {names.hf_class};
  j["model_type"] = names.hf_model_type;
  j["hidden_size"] = c.hidden;
  j["intermediate_size"] = c.intermediate;
  j["num_hidden_layers"] = c.layers;
  j["num_attention_heads"] = c.heads;
  j["num_key_value_heads"] = c.kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab;
  // Left to the config class's default where the source did not say.
  if (c.max_positions > 0) j["max_position_embeddings"] = c.max_positions;
  const bool gemma = c.arch == Architecture::kGemma2 || c.arch == Architecture::kGemma3;
  j[gemma ? "hidden_activation" : "hidden_act"] = gemma ? "gelu_pytorch_tanh" : "silu";
  if (c.norm == NormKind::kRms) j["rms_norm_eps"] = ShortestDecimal(c.norm_eps);
  j["rope_theta"] = ShortestDecimal(rope.theta);
  if (rope.llama3_factor > 0) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", ShortestDecimal(rope.llama3_factor)},
                         {"low_freq_factor", ShortestDecimal(rope.llama3_low_freq_factor)},
                         {"high_freq_factor", ShortestDecimal(rope.llama3_high_freq_factor)},
                         {"original_max_position_embeddings", rope.llama3_original_max_positions}};
  } else if (rope.linear_factor != 1.f) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", ShortestDecimal(rope.linear_factor)}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["bos_token_id"] = c.bos_token >= 0 ? OrderedJson(c.bos_token) : OrderedJson(nullptr);
  j["eos_token_id"] = c.eos_token >= 0 ? OrderedJson(c.eos_token) : OrderedJson(nullptr);
  switch (c.arch) {
    case Architecture::kLlama:
      j["attention_bias"] = false;
      j["mlp_bias"] = false;
      break;
    case Architecture::kMistral:
      // MistralConfig's default is 4096: null where the model has no window.
      j["sliding_window"] = c.sliding_window > 0 ? OrderedJson(c.sliding_window) : OrderedJson();
      break;
    case Architecture::kQwen2:
      j["use_sliding_window"] = false;
      break;
    case Architecture::kOlmo:
      j["attention_bias"] = false;
      j["clip_qkv"] = c.clip_qkv > 0 ? OrderedJson(ShortestDecimal(c.clip_qkv)) : OrderedJson();
      break;
    case Architecture::kQwen3:
      j["attention_bias"] = false;
      j["use_sliding_window"] = false;
      break;
    case Architecture::kOlmo2:
      j["attention_bias"] = false;
      break;
    case Architecture::kGemma2:
    case Architecture::kGemma3: {
      const float scale =
          c.attn_scale > 0 ? c.attn_scale : 1.f / std::sqrt(static_cast<float>(c.head_dim));
      j["query_pre_attn_scalar"] = ShortestDecimal(1.f / (scale * scale));
      j["attn_logit_softcapping"] =
          c.attn_softcap > 0 ? OrderedJson(ShortestDecimal(c.attn_softcap)) : OrderedJson();
      j["final_logit_softcapping"] =
          c.final_softcap > 0 ? OrderedJson(ShortestDecimal(c.final_softcap)) : OrderedJson();
      j["sliding_window"] = c.sliding_window > 0 ? OrderedJson(c.sliding_window) : OrderedJson();
      OrderedJson types = OrderedJson::array();
      for (int l = 0; l < c.layers; ++l) {
        types.push_back(c.Sliding(l) ? "sliding_attention" : "full_attention");
      }
      j["layer_types"] = types;
      if (c.arch == Architecture::kGemma3) {
        j["rope_local_base_freq"] = ShortestDecimal(c.sliding_rope.theta);
      }
      break;
    }
    case Architecture::kMixtral:
      j["num_local_experts"] = c.experts;
      j["num_experts_per_tok"] = c.experts_per_token;
      j["intermediate_size"] = c.expert_intermediate;
      j["sliding_window"] = c.sliding_window > 0 ? OrderedJson(c.sliding_window) : OrderedJson();
      break;
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe:
      j["num_experts"] = c.experts;
      j["num_experts_per_tok"] = c.experts_per_token;
      j["moe_intermediate_size"] = c.expert_intermediate;
      if (c.arch == Architecture::kQwen2Moe) {
        j["shared_expert_intermediate_size"] = c.intermediate;
      }
      j["norm_topk_prob"] = c.norm_topk;
      j["decoder_sparse_step"] = 1;
      j["mlp_only_layers"] = OrderedJson::array();
      j["use_sliding_window"] = false;
      break;
    case Architecture::kOlmoe:
      j["num_experts"] = c.experts;
      j["num_experts_per_tok"] = c.experts_per_token;
      j["intermediate_size"] = c.expert_intermediate;
      j["norm_topk_prob"] = c.norm_topk;
      j["clip_qkv"] = c.clip_qkv > 0 ? OrderedJson(ShortestDecimal(c.clip_qkv)) : OrderedJson();
      break;
    case Architecture::kPhi3:
      // Read by transformers 4.49 and later (Phi-4-mini); older versions rotate whole heads.
      if (c.rope.rotary_dim != c.head_dim) {
        j["partial_rotary_factor"] =
            ShortestDecimal(static_cast<float>(c.rope.rotary_dim) / c.head_dim);
      }
      break;
  }
  return j;
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("%s: cannot read", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrFormat("%s: read failed", path));
  return text.str();
}

// The export's config.json text.
absl::StatusOr<std::string> ConfigText(const Model& model, bool tied, DType dtype) {
  OrderedJson config;
  if (model.format == ModelFormat::kHuggingFace) {
    const std::string path = model.path + "/config.json";
    auto text = ReadText(path);
    if (!text.ok()) return text.status();
    config = OrderedJson::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: not a JSON object", path));
    }
  } else {
    auto synthesized = SynthesizedConfig(model.config);
    if (!synthesized.ok()) return synthesized.status();
    config = std::move(*synthesized);
  }
  config["tie_word_embeddings"] = tied;
  config["torch_dtype"] = dtype == DType::kF32 ? "float32" : "bfloat16";
  try {
    return config.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("config.json: %s", e.what()));
  }
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The permissions mkdir(0777) would give (mkdtemp makes it 0700).
mode_t DirectoryModeForUmask() { return 0777 & ~ProcessUmask(); }

// The directory's files, written into dir (empty, made by the caller).
absl::Status WriteDirectory(const std::string& dir, const std::string& config_text,
                            const std::vector<std::string>& tokenizer_sources,
                            const SafetensorsWriter& weights, const std::atomic<bool>* cancelled) {
  auto config = OutputFile::Create(dir + "/config.json");
  if (!config.ok()) return config.status();
  if (auto s = (*config)->Append(config_text); !s.ok()) return s;
  if (auto s = (*config)->Finish(); !s.ok()) return s;
  for (const std::string& source : tokenizer_sources) {
    const std::string name = source.substr(source.rfind('/') + 1);
    if (auto s = CopyFileContents(source, dir + "/" + name); !s.ok()) return s;
  }
  if (auto s = weights.Write(dir + "/model.safetensors", cancelled); !s.ok()) return s;
  if (::chmod(dir.c_str(), DirectoryModeForUmask()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("%s: chmod failed", dir));
  }
  // The entries must be durable before the rename publishes the directory.
  return SyncDirectory(dir);
}

}  // namespace

absl::Status ExportHuggingFace(const Model& model, const std::string& out_dir_arg, DType dtype,
                               const std::atomic<bool>* cancelled) {
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a Hugging Face export stores F32 or BF16 weights, not %s", DTypeName(dtype)));
  }
  // "out/" would otherwise put the temporary inside the directory it is to become.
  std::string out_dir = out_dir_arg;
  while (out_dir.size() > 1 && out_dir.back() == '/') out_dir.pop_back();
  if (out_dir.empty() || out_dir == "/") {
    return absl::InvalidArgumentError(absl::StrFormat("bad output directory '%s'", out_dir_arg));
  }
  struct stat st;
  if (::lstat(out_dir.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrFormat("%s already exists", out_dir));
  }
  if (static_cast<int>(model.layers.size()) != model.config.layers) {
    return absl::InvalidArgumentError("the model's layers do not match its config");
  }

  // Everything that can be refused is settled before anything is written.
  const bool tied =
      model.lm_head.data == model.embed.data && model.lm_head.transform == model.embed.transform;
  SafetensorsWriter weights(dtype);
  if (auto s = AddModelTensors(model, tied, &weights); !s.ok()) return s;
  auto config_text = ConfigText(model, tied, dtype);
  if (!config_text.ok()) return config_text.status();
  std::vector<std::string> tokenizer_sources;
  if (model.format == ModelFormat::kHuggingFace) {
    for (const char* name : kTokenizerFiles) {
      const std::string source = model.path + "/" + name;
      if (IsRegularFile(source)) tokenizer_sources.push_back(source);
    }
  }

  std::string temp_dir = out_dir + ".tmp-XXXXXX";
  if (::mkdtemp(temp_dir.data()) == nullptr) {
    return absl::ErrnoToStatus(
        errno, absl::StrFormat("%s: cannot create a temporary directory beside it", out_dir));
  }
  absl::Status status =
      WriteDirectory(temp_dir, *config_text, tokenizer_sources, weights, cancelled);
  if (status.ok()) status = model.CheckFilesUnchanged();
  if (status.ok()) status = RenameWithoutReplacing(temp_dir, out_dir);
  if (!status.ok()) {
    std::error_code ignored;
    std::filesystem::remove_all(temp_dir, ignored);
    return status;
  }
  return absl::OkStatus();
}

}  // namespace superweight
