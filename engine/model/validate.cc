#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/model/loaders.h"

namespace superweight {

std::vector<float> ToFloatVector(DType dtype, const uint8_t* data, int64_t n) {
  std::vector<float> out(n);
  DequantizeRow(dtype, data, n, out.data());
  return out;
}

std::vector<bool> SlidingEvery(int layers, int64_t every) {
  std::vector<bool> sliding(layers);
  for (int l = 0; l < layers; ++l) sliding[l] = every <= 0 || l % every < every - 1;
  return sliding;
}

absl::Status SplitFusedProjections(const Matrix& qkv, const Matrix& gate_up, const ModelConfig& c,
                                   int layer, LayerWeights* w) {
  const int64_t q_rows = int64_t{c.heads} * c.head_dim;
  const int64_t kv_rows = int64_t{c.kv_heads} * c.head_dim;
  if (qkv.rows != q_rows + 2 * kv_rows || gate_up.rows != 2 * int64_t{c.intermediate}) {
    return absl::InvalidArgumentError(
        absl::StrFormat("fused projections of layer %d have the wrong shape", layer));
  }
  w->Get(LinearKind::kQ) = qkv.RowSlice(0, q_rows);
  w->Get(LinearKind::kK) = qkv.RowSlice(q_rows, kv_rows);
  w->Get(LinearKind::kV) = qkv.RowSlice(q_rows + kv_rows, kv_rows);
  w->Get(LinearKind::kGate) = gate_up.RowSlice(0, c.intermediate);
  w->Get(LinearKind::kUp) = gate_up.RowSlice(c.intermediate, c.intermediate);
  return absl::OkStatus();
}

absl::Status ValidateConfig(const ModelConfig& c, const std::string& path) {
  auto error = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", path, msg));
  };
  const struct {
    const char* name;
    int value, most;
  } sizes[] = {
      {"hidden size", c.hidden, 1 << 16},    {"intermediate size", c.intermediate, 1 << 18},
      {"layer count", c.layers, 1024},       {"attention heads", c.heads, 1024},
      {"key/value heads", c.kv_heads, 1024}, {"head_dim", c.head_dim, 1024},
      {"vocabulary size", c.vocab, 1 << 22}};
  for (const auto& size : sizes) {
    if (size.value <= 0 || size.value > size.most) {
      return error(absl::StrFormat("%s %d is outside [1, %d]", size.name, size.value, size.most));
    }
  }
  if (c.traits().moe) {
    if (c.experts <= 0 || c.experts > 4096 || c.experts_per_token <= 0 ||
        c.experts_per_token > c.experts) {
      return error(absl::StrFormat("%d experts with %d per token", c.experts, c.experts_per_token));
    }
    if (c.expert_intermediate <= 0 || c.expert_intermediate > (1 << 18)) {
      return error(absl::StrFormat("expert intermediate size %d is outside [1, %d]",
                                   c.expert_intermediate, 1 << 18));
    }
  } else if (c.experts != 0) {
    return error("experts in a dense architecture");
  }
  if (c.heads % c.kv_heads != 0) {
    return error(
        absl::StrFormat("%d heads are not a multiple of %d KV heads", c.heads, c.kv_heads));
  }
  if (c.max_positions < 0) return error("max_position_embeddings is negative");
  if (!std::isfinite(c.norm_eps) || c.norm_eps <= 0 || c.norm_eps >= 1) {
    return error(absl::StrFormat("norm epsilon %g is not in (0, 1)", c.norm_eps));
  }
  if (!std::isfinite(c.rope.theta) || c.rope.theta <= 0) {
    return error(absl::StrFormat("rope theta %g is not a positive number", c.rope.theta));
  }
  if (!std::isfinite(c.clip_qkv) || c.clip_qkv < 0) {
    return error(absl::StrFormat("clip_qkv %g is not a non-negative number", c.clip_qkv));
  }
  if (c.rope.rotary_dim <= 0 || c.rope.rotary_dim > c.head_dim || c.rope.rotary_dim % 2 != 0) {
    return error(absl::StrFormat("rotary dimension %d does not fit head_dim %d", c.rope.rotary_dim,
                                 c.head_dim));
  }
  for (const RopeConfig* r : {&c.rope, &c.sliding_rope}) {
    if (r == &c.sliding_rope && c.sliding_layers.empty()) break;
    if (!std::isfinite(r->theta) || r->theta <= 0 || !std::isfinite(r->linear_factor) ||
        r->linear_factor <= 0) {
      return error("rope base or scaling factor is not a positive number");
    }
    if (!r->freq_factors.empty() &&
        r->freq_factors.size() != static_cast<size_t>(c.rope.rotary_dim / 2)) {
      return error("rope frequency factors do not match the rotary dimension");
    }
    for (float f : r->freq_factors) {
      if (!std::isfinite(f) || f <= 0) return error("a rope frequency factor is not positive");
    }
  }
  for (float v : {c.attn_scale, c.attn_softcap, c.final_softcap}) {
    if (!std::isfinite(v) || v < 0) {
      return error(
          absl::StrFormat("attention scale or soft-capping %g is not a non-negative number", v));
    }
  }
  if (c.sliding_window < 0 ||
      (!c.sliding_layers.empty() && c.sliding_layers.size() != static_cast<size_t>(c.layers))) {
    return error("sliding-window layers do not match the layer count");
  }
  return absl::OkStatus();
}

absl::Status ValidateModel(const Model& model) {
  const ModelConfig& c = model.config;
  auto error = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", model.path, msg));
  };
  if (absl::Status s = ValidateConfig(c, model.path); !s.ok()) return s;
  auto check = [&](const Matrix& m, int64_t rows, int64_t cols, const std::string& what) {
    if (m.data == nullptr) return error(absl::StrFormat("missing tensor %s", what));
    if (m.rows != rows || m.cols != cols) {
      return error(absl::StrFormat("tensor %s has shape [%d, %d], the config says [%d, %d]", what,
                                   m.rows, m.cols, rows, cols));
    }
    return absl::OkStatus();
  };
  if (auto s = check(model.embed, c.vocab, c.hidden, "token embedding"); !s.ok()) return s;
  if (auto s = check(model.lm_head, c.vocab, c.hidden, "lm_head"); !s.ok()) return s;
  if (c.norm == NormKind::kRms && model.final_norm.size() != static_cast<size_t>(c.hidden)) {
    return error("final norm missing or of the wrong size");
  }
  if (model.layers.size() != static_cast<size_t>(c.layers)) return error("layer count mismatch");
  const int64_t q_rows = int64_t{c.heads} * c.head_dim;
  const int64_t kv_rows = int64_t{c.kv_heads} * c.head_dim;
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& w = model.layers[l];
    const std::string p = absl::StrFormat("layers.%d.", l);
    const struct {
      LinearKind kind;
      int64_t rows, cols;
    } kShapes[] = {
        {LinearKind::kQ, q_rows, c.hidden},
        {LinearKind::kK, kv_rows, c.hidden},
        {LinearKind::kV, kv_rows, c.hidden},
        {LinearKind::kO, c.hidden, q_rows},
        {LinearKind::kGate, c.intermediate, c.hidden},
        {LinearKind::kUp, c.intermediate, c.hidden},
        {LinearKind::kDown, c.hidden, c.intermediate},
    };
    // A mixture of experts has a dense MLP only as its shared expert.
    const bool dense_mlp = !c.traits().moe || c.traits().shared_expert;
    for (const auto& s : kShapes) {
      const bool mlp =
          s.kind == LinearKind::kGate || s.kind == LinearKind::kUp || s.kind == LinearKind::kDown;
      if (mlp && !dense_mlp) {
        if (w.Get(s.kind).data != nullptr) return error(p + "a dense MLP beside the experts");
        continue;
      }
      if (auto st = check(w.Get(s.kind), s.rows, s.cols, p + LinearKindName(s.kind)); !st.ok()) {
        return st;
      }
    }
    if (c.traits().moe) {
      if (auto st = check(w.router, c.experts, c.hidden, p + "router"); !st.ok()) return st;
      if (w.experts.size() != static_cast<size_t>(c.experts)) {
        return error(absl::StrFormat("%sexperts: %d of %d", p, w.experts.size(), c.experts));
      }
      for (int e = 0; e < c.experts; ++e) {
        const std::string q = absl::StrFormat("%sexperts.%d.", p, e);
        const ExpertWeights& x = w.experts[e];
        if (auto st = check(x.gate, c.expert_intermediate, c.hidden, q + "gate_proj"); !st.ok()) {
          return st;
        }
        if (auto st = check(x.up, c.expert_intermediate, c.hidden, q + "up_proj"); !st.ok()) {
          return st;
        }
        if (auto st = check(x.down, c.hidden, c.expert_intermediate, q + "down_proj"); !st.ok()) {
          return st;
        }
      }
      if (w.shared_expert_gate.size() != (c.traits().shared_expert ? size_t(c.hidden) : 0)) {
        return error(p + "shared expert gate missing or of the wrong size");
      }
    }
    const NormPlacement placement = c.traits().norm_placement;
    const bool pre = placement != NormPlacement::kPost;
    const bool post = placement != NormPlacement::kPre;
    auto sized = [&](const std::vector<float>& v, bool wanted, int64_t size) {
      return wanted ? v.size() == static_cast<size_t>(size) : v.empty();
    };
    if (c.norm == NormKind::kRms &&
        !(sized(w.attn_norm, pre, c.hidden) && sized(w.ffn_norm, pre, c.hidden) &&
          sized(w.post_attn_norm, post, c.hidden) && sized(w.post_ffn_norm, post, c.hidden))) {
      return error(p + "norm weights missing or of the wrong size");
    }
    const QkNorm qk = c.traits().qk_norm;
    const bool per_head = qk == QkNorm::kPerHead;
    if (!sized(w.q_norm, qk != QkNorm::kNone, per_head ? c.head_dim : q_rows) ||
        !sized(w.k_norm, qk != QkNorm::kNone, per_head ? c.head_dim : kv_rows)) {
      return error(p + "q/k norm weights missing or of the wrong size");
    }
    if (!w.q_bias.empty() && (w.q_bias.size() != static_cast<size_t>(q_rows) ||
                              w.k_bias.size() != static_cast<size_t>(kv_rows) ||
                              w.v_bias.size() != static_cast<size_t>(kv_rows))) {
      return error(p + "attention biases of the wrong size");
    }
  }
  if (model.tokenizer != nullptr && model.tokenizer->vocab_size() > c.vocab) {
    return error(absl::StrFormat("tokenizer has %d tokens, the model %d",
                                 model.tokenizer->vocab_size(), c.vocab));
  }
  return absl::OkStatus();
}

}  // namespace superweight
