// Under the sanitizers GCC 12 reports libstdc++'s own std::regex internals (a std::function
// moved inside _NFA) as maybe uninitialized wherever they are inlined (GCC bug 105562).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "engine/formats/llama_quantize_plan.h"

#include <algorithm>
#include <cstdio>
#include <regex>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/formats/quantize_ggml.h"

namespace superweight {
namespace {

// llama_ftype values (llama.h).
enum : uint32_t {
  kAllF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 7,
  kQ5_0 = 8,
  kQ5_1 = 9,
  kQ2_K = 10,
  kQ3_K_S = 11,
  kQ3_K_M = 12,
  kQ3_K_L = 13,
  kQ4_K_S = 14,
  kQ4_K_M = 15,
  kQ5_K_S = 16,
  kQ5_K_M = 17,
  kQ6_K = 18,
  kBF16 = 32,
};

const std::vector<LlamaFtype>& FileTypeTable() {
  static const auto* table = new std::vector<LlamaFtype>{
      {"F32", kAllF32, DType::kF32},     {"F16", kF16, DType::kF16},
      {"BF16", kBF16, DType::kBF16},     {"Q4_0", kQ4_0, DType::kQ4_0},
      {"Q4_1", kQ4_1, DType::kQ4_1},     {"Q5_0", kQ5_0, DType::kQ5_0},
      {"Q5_1", kQ5_1, DType::kQ5_1},     {"Q8_0", kQ8_0, DType::kQ8_0},
      {"Q2_K", kQ2_K, DType::kQ2_K},     {"Q3_K_S", kQ3_K_S, DType::kQ3_K},
      {"Q3_K_M", kQ3_K_M, DType::kQ3_K}, {"Q3_K_L", kQ3_K_L, DType::kQ3_K},
      {"Q4_K_S", kQ4_K_S, DType::kQ4_K}, {"Q4_K_M", kQ4_K_M, DType::kQ4_K},
      {"Q5_K_S", kQ5_K_S, DType::kQ5_K}, {"Q5_K_M", kQ5_K_M, DType::kQ5_K},
      {"Q6_K", kQ6_K, DType::kQ6_K},
  };
  return *table;
}

// What llama-quant.cpp sorts tensors into (tensor_get_category).
enum class Category {
  kOutput,
  kTokenEmbd,
  kAttnQkv,
  kAttnKvB,
  kAttnV,
  kAttnK,
  kAttnQ,
  kAttnOutput,
  kFfnUp,
  kFfnGate,
  kFfnDown,
  kOther,
};

bool IsTokenEmbd(absl::string_view name) {
  return name == "token_embd.weight" || name == "per_layer_token_embd.weight";
}

Category CategoryOf(absl::string_view name) {
  if (name == "output.weight") return Category::kOutput;
  if (IsTokenEmbd(name)) return Category::kTokenEmbd;
  // In llama.cpp's order: the first substring found decides.
  const std::pair<const char*, Category> kBySubstring[] = {
      {"attn_qkv.weight", Category::kAttnQkv},
      {"attn_kv_b.weight", Category::kAttnKvB},
      {"attn_v.weight", Category::kAttnV},
      {"attn_k.weight", Category::kAttnK},
      {"attn_q.weight", Category::kAttnQ},
      {"attn_output.weight", Category::kAttnOutput},
      {"ffn_up", Category::kFfnUp},
      {"ffn_gate", Category::kFfnGate},
      {"ffn_down", Category::kFfnDown},
  };
  for (const auto& [substring, category] : kBySubstring) {
    if (absl::StrContains(name, substring)) return category;
  }
  return Category::kOther;
}

bool IsAttnVLike(Category c) {
  return c == Category::kAttnV || c == Category::kAttnQkv || c == Category::kAttnKvB;
}

// ggml_n_dims: the dimensions up to the last one above 1.
int DimsOf(const GgufTensor& t) {
  int dims = 1;
  for (size_t d = 1; d < t.ne.size(); ++d) {
    if (t.ne[d] > 1) dims = static_cast<int>(d) + 1;
  }
  return dims;
}

// tensor_allows_quantization: 2-D and 3-D weights, less norms, routers, positional tables and
// the small tensors llama.cpp names one by one.
bool AllowsQuantization(const GgufTensor& t, const std::string& arch) {
  if (DimsOf(t) < 2) return false;
  const std::string& name = t.name;
  if (!absl::EndsWith(name, "weight")) return false;
  const char* kNever[] = {
      "_norm.weight",
      "ffn_gate_inp.weight",
      "ffn_gate_tid2eid.weight",
      "altup",
      "laurel",
      "per_layer_model_proj",
      "ssm_conv1d",
      "shortconv.conv.weight",
      "indexer.k_proj.weight",
      "indexer.q_proj.weight",
      "time_mix_first.weight",
      "time_mix_w0.weight",
      "time_mix_w1.weight",
      "time_mix_w2.weight",
      "time_mix_v0.weight",
      "time_mix_v1.weight",
      "time_mix_v2.weight",
      "time_mix_a0.weight",
      "time_mix_a1.weight",
      "time_mix_a2.weight",
      "time_mix_g1.weight",
      "time_mix_g2.weight",
      "time_mix_decay_w1.weight",
      "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight",
      "attn_rel_b.weight",
      ".position_embd",
      "sam.pos_embd",
      "sam.neck.",
      "sam.net_",
      ".rel_pos",
      ".patch_embd",
      ".patch_merger",
      "a.rvq.codebook",
      "mm.a.code_embd",
  };
  for (const char* part : kNever) {
    if (absl::StrContains(name, part)) return false;
  }
  if (name == "position_embd.weight" || name == "token_types.weight") return false;
  (void)arch;  // the one architecture-specific list (GLM-5-next) names tensors no family here has
  return true;
}

// llama_model_loader's weight_name_comparer: tensors outside the layers first, then by layer,
// then by name.
int LayerOf(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) layer = -1;
  return layer;
}

struct Hparams {
  std::string arch;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int n_expert = 0;
  int n_gqa() const { return n_head_kv == 0 ? 0 : n_head / n_head_kv; }
  // llama.cpp's LLM_TYPE_70B, the one model size its mixes single out (src/models/*.cpp).
  bool is_70b() const {
    if (arch == "llama") return n_layer == 80 && n_head != n_head_kv;
    if (arch == "qwen2" || arch == "deci" || arch == "olmo") return n_layer == 80;
    return arch == "jais2" && n_layer == 68;
  }
};

// An integer key, or the first element of a per-layer array; `fallback` where it is missing or
// outside [0, 2^20] (a file's value, never trusted to fit an int).
int IntOrFirst(const GgufFile& file, const std::string& key, int fallback) {
  const GgufValue* v = file.Find(key);
  if (v == nullptr) return fallback;
  double value;
  if (v->kind == GgufValue::Kind::kInt) {
    value = static_cast<double>(v->i);
  } else if (v->kind == GgufValue::Kind::kArray && !v->numbers.empty()) {
    value = v->numbers.front();
  } else {
    return fallback;
  }
  return value >= 0 && value <= (1 << 20) ? static_cast<int>(value) : fallback;
}

struct State {
  Hparams hp;
  const LlamaQuantizeOptions* options;
  uint32_t ftype;
  bool tied_embeddings = true;
  int n_attention_wv = 0, n_ffn_down = 0, n_ffn_gate = 0, n_ffn_up = 0;
  int i_attention_wv = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
  std::vector<std::pair<std::regex, DType>> patterns;
};

bool UseMoreBits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// layer_info: a mixture of experts interleaves its tensors, so the layer comes from the name;
// otherwise from the running count.
absl::StatusOr<int> LayerIndex(const State& st, int counter, const std::string& name) {
  if (std::max(1, st.hp.n_expert) <= 1) return counter;
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1 || layer < 0 || layer >= st.hp.n_layer) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: a mixture-of-experts tensor outside the model's %d layers", name, st.hp.n_layer));
  }
  return layer;
}

// llama_tensor_get_type_impl for the file types of FileTypeTable.
absl::StatusOr<DType> MixType(State& st, DType new_type, const GgufTensor& t, Category category) {
  const uint32_t ftype = st.ftype;
  const bool falcon = st.hp.arch == "falcon";
  const int n_expert = st.hp.n_expert;
  if (category == Category::kOutput || (st.tied_embeddings && category == Category::kTokenEmbd)) {
    if (st.options->output_tensor_type.has_value()) {
      new_type = *st.options->output_tensor_type;
    } else if (falcon || t.ne[0] % Traits(new_type).block_elements != 0) {
      new_type = DType::kQ8_0;
    } else if (new_type != DType::kQ8_0) {
      new_type = DType::kQ6_K;
    }
  } else if (category == Category::kTokenEmbd) {
    if (st.options->token_embedding_type.has_value()) new_type = *st.options->token_embedding_type;
  } else if (IsAttnVLike(category)) {
    if (ftype == kQ2_K) {
      new_type = st.hp.n_gqa() >= 4 ? DType::kQ4_K : DType::kQ3_K;
    } else if (ftype == kQ3_K_M) {
      new_type = st.i_attention_wv < 2 ? DType::kQ5_K : DType::kQ4_K;
    } else if (ftype == kQ3_K_L) {
      new_type = DType::kQ5_K;
    } else if ((ftype == kQ4_K_M || ftype == kQ5_K_M) &&
               UseMoreBits(st.i_attention_wv, st.n_attention_wv)) {
      new_type = DType::kQ6_K;
    } else if (ftype == kQ4_K_S && st.i_attention_wv < 4) {
      new_type = DType::kQ5_K;
    }
    if (st.hp.is_70b() && (new_type == DType::kQ3_K || new_type == DType::kQ4_K)) {
      new_type = DType::kQ5_K;
    }
    if (n_expert == 8) new_type = DType::kQ8_0;
    ++st.i_attention_wv;
  } else if (category == Category::kAttnK) {
    if (n_expert == 8) new_type = DType::kQ8_0;
  } else if (category == Category::kFfnDown) {
    auto layer = LayerIndex(st, st.i_ffn_down, t.name);
    if (!layer.ok()) return layer.status();
    const int i = *layer, n = st.n_ffn_down;
    if (ftype == kQ2_K) {
      new_type = DType::kQ3_K;
    } else if (ftype == kQ3_K_M) {
      new_type = i < n / 16                     ? DType::kQ5_K
                 : !falcon || UseMoreBits(i, n) ? DType::kQ4_K
                                                : DType::kQ3_K;
    } else if (ftype == kQ3_K_L) {
      new_type = falcon ? DType::kQ4_K : DType::kQ5_K;
    } else if (ftype == kQ4_K_M) {
      if (falcon) {
        new_type = i < n / 16 ? DType::kQ6_K : UseMoreBits(i, n) ? DType::kQ5_K : DType::kQ4_K;
      } else if (UseMoreBits(i, n)) {
        new_type = DType::kQ6_K;
      }
    } else if (ftype == kQ5_K_M && UseMoreBits(i, n)) {
      new_type = DType::kQ6_K;
    } else if (ftype == kQ4_K_S && !falcon && i < n / 8) {
      new_type = DType::kQ5_K;
    } else if ((ftype == kQ4_0 || ftype == kQ5_0) && st.options->has_imatrix && i < n / 8) {
      new_type = ftype == kQ4_0 ? DType::kQ4_1 : DType::kQ5_1;
    }
    ++st.i_ffn_down;
  } else if (category == Category::kAttnOutput) {
    if (!falcon) {
      if (n_expert == 8) {
        if (ftype == kQ2_K || ftype == kQ3_K_S || ftype == kQ3_K_M || ftype == kQ4_K_S ||
            ftype == kQ4_K_M) {
          new_type = DType::kQ5_K;
        }
      } else if (ftype == kQ2_K) {
        new_type = DType::kQ3_K;
      } else if (ftype == kQ3_K_M) {
        new_type = DType::kQ4_K;
      } else if (ftype == kQ3_K_L) {
        new_type = DType::kQ5_K;
      }
    } else if (ftype == kQ3_K_L) {
      new_type = DType::kQ4_K;
    }
  } else if (category == Category::kFfnGate) {
    if (auto layer = LayerIndex(st, st.i_ffn_gate, t.name); !layer.ok()) return layer.status();
    ++st.i_ffn_gate;
  } else if (category == Category::kFfnUp) {
    if (auto layer = LayerIndex(st, st.i_ffn_up, t.name); !layer.ok()) return layer.status();
    ++st.i_ffn_up;
  }
  return new_type;
}

}  // namespace

const std::vector<LlamaFtype>& LlamaFileTypes() { return FileTypeTable(); }

absl::StatusOr<LlamaFtype> FindLlamaFileType(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  // llama-quantize's aliases: the medium mix of each K type.
  const std::string wanted = upper == "Q3_K"   ? "Q3_K_M"
                             : upper == "Q4_K" ? "Q4_K_M"
                             : upper == "Q5_K" ? "Q5_K_M"
                                               : upper;
  std::vector<std::string> names;
  for (const LlamaFtype& t : FileTypeTable()) {
    if (wanted == t.name) return t;
    names.push_back(t.name);
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown llama.cpp file type '%s' (%s)", name.substr(0, 40), absl::StrJoin(names, ", ")));
}

absl::StatusOr<TensorTypeOverride> ParseTensorTypeOverride(absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor type override '%s': PATTERN=TYPE, as llama-quantize's --tensor-type",
        text.substr(0, 80)));
  }
  auto type = DTypeFromName(absl::AsciiStrToUpper(text.substr(eq + 1)));
  if (!type.ok()) return type.status();
  return TensorTypeOverride{absl::AsciiStrToLower(text.substr(0, eq)), *type};
}

const PlannedTensor* LlamaQuantizePlan::Find(absl::string_view name) const {
  for (const PlannedTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<LlamaQuantizePlan> PlanLlamaQuantize(const GgufFile& file,
                                                    const LlamaQuantizeOptions& options) {
  State st;
  st.options = &options;
  st.ftype = options.file_type.ftype;
  st.hp.arch = file.GetString("general.architecture").value_or("");
  const std::string& arch = st.hp.arch;
  st.hp.n_layer = IntOrFirst(file, arch + ".block_count", 0);
  st.hp.n_head = IntOrFirst(file, arch + ".attention.head_count", 0);
  st.hp.n_head_kv = IntOrFirst(file, arch + ".attention.head_count_kv", st.hp.n_head);
  st.hp.n_expert = IntOrFirst(file, arch + ".expert_count", 0);
  for (const TensorTypeOverride& o : options.overrides) {
    // std::regex reports a bad pattern by exception: caught here, where it is called.
    try {
      st.patterns.emplace_back(std::regex(o.pattern), o.type);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor type override pattern '%s': %s",
                                                        o.pattern.substr(0, 80), e.what()));
    }
  }

  std::vector<const GgufTensor*> order;
  for (const std::string& name : file.tensor_order) order.push_back(&file.tensors.at(name));
  std::stable_sort(order.begin(), order.end(), [](const GgufTensor* a, const GgufTensor* b) {
    const int la = LayerOf(a->name), lb = LayerOf(b->name);
    if (la != lb) return la < lb;
    return a->name < b->name;
  });
  for (const GgufTensor* t : order) {
    const Category c = CategoryOf(t->name);
    if (IsAttnVLike(c)) ++st.n_attention_wv;
    if (c == Category::kOutput) st.tied_embeddings = false;
  }
  st.n_ffn_down = st.n_ffn_gate = st.n_ffn_up = st.hp.n_layer;

  const DType default_type = options.file_type.default_type;
  LlamaQuantizePlan plan;
  plan.file_type = options.file_type.ftype;
  for (const GgufTensor* t : order) {
    PlannedTensor p{t->name, t->dtype, t->dtype};
    const Category category = CategoryOf(t->name);
    if (AllowsQuantization(*t, arch)) {
      if (options.token_embedding_type.has_value() && category == Category::kTokenEmbd) {
        // per_layer_token_embd follows the embedding type unless an override names it.
        bool named = false;
        if (t->name == "per_layer_token_embd.weight") {
          for (const auto& [pattern, type] : st.patterns) {
            named |= std::regex_search(t->name, pattern);
          }
        }
        if (!named) {
          p.to = *options.token_embedding_type;
          p.overridden = true;
        }
      }
      if (!p.overridden && options.output_tensor_type.has_value() &&
          category == Category::kOutput) {
        p.to = *options.output_tensor_type;
        p.overridden = true;
      }
    }
    if (p.overridden) {
      // As llama.cpp: the embedding and output types skip the mix and the fallback.
    } else if (AllowsQuantization(*t, arch)) {
      DType type = default_type;
      if (IsQuantized(default_type)) {
        bool manual = false;
        for (const auto& [pattern, override_type] : st.patterns) {
          if (std::regex_search(t->name, pattern)) {
            type = override_type;
            manual = true;
            break;
          }
        }
        p.overridden = manual;
        if (!manual && !options.pure) {
          auto mixed = MixType(st, type, *t, category);
          if (!mixed.ok()) return mixed.status();
          type = *mixed;
        }
        DType fitted = FallbackTypeForRows(type, t->ne[0]);
        // A 32-value type has no smaller block to fall back to: F16, as llama.cpp writes it.
        if (t->ne[0] % Traits(fitted).block_elements != 0) fitted = DType::kF16;
        p.fallback = fitted != type;
        type = fitted;
      }
      p.to = type;
    }
    if (p.to != p.from && !HasGgmlQuantizer(p.to)) {
      return absl::UnimplementedError(
          absl::StrFormat("%s: no quantizer for %s", t->name, DTypeName(p.to)));
    }
    plan.tensors.push_back(p);
  }
  return plan;
}

}  // namespace superweight
