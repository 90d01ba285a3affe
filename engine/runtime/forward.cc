#include "engine/runtime/forward.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/runtime/aligned_vector.h"
#include "engine/runtime/attention.h"
#include "engine/runtime/fast_math.h"
#include "engine/runtime/flush_subnormals.h"

namespace superweight {
namespace {

// out = weight * x / sqrt(mean(x^2) + eps), in f32 as transformers computes it. A function of
// its own so that GCC vectorizes it (it does not inside an OpenMP-outlined loop).
__attribute__((noinline)) void RmsNormRow(const float* x, const float* weight, int64_t n, float eps,
                                          float* out) {
  float ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / n + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

void Norm(const ModelConfig& c, const std::vector<float>& weight, const float* x, int64_t rows,
          float* out) {
  const int64_t n = c.hidden;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const float* xr = x + t * n;
    float* o = out + t * n;
    if (c.norm == NormKind::kRms) {
      RmsNormRow(xr, weight.data(), n, c.norm_eps, o);
    } else {  // LayerNorm without affine parameters (OLMo)
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += xr[i];
      const float mean = static_cast<float>(sum / n);
      double var = 0;
      for (int64_t i = 0; i < n; ++i) var += static_cast<double>(xr[i] - mean) * (xr[i] - mean);
      const float inv = 1.f / std::sqrt(static_cast<float>(var / n) + c.norm_eps);
      for (int64_t i = 0; i < n; ++i) o[i] = (xr[i] - mean) * inv;
    }
  }
}

// RMSNorm of each `weight.size()`-wide piece of x[rows, width], in place: QkNorm's per-head and
// whole-projection norms alike.
void RmsNormPieces(const std::vector<float>& weight, float eps, float* x, int64_t rows,
                   int64_t width) {
  const int64_t n = static_cast<int64_t>(weight.size());
  const int64_t pieces = rows * (width / n);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pieces; ++p) RmsNormRow(x + p * n, weight.data(), n, eps, x + p * n);
}

// x[i] += norm(y)[i] over rows of the hidden size: a post-norm's output added to the stream.
void AddNormed(const ModelConfig& c, const std::vector<float>& weight, float* y, float* x,
               int64_t rows) {
  const int64_t n = c.hidden;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    RmsNormRow(y + t * n, weight.data(), n, c.norm_eps, y + t * n);
    for (int64_t i = 0; i < n; ++i) x[t * n + i] += y[t * n + i];
  }
}

// cos and sin of each position's angles, [position][rotary_dim / 2]: computed once per pass
// and shared by q and k of every layer (sincosf was 0.7% of a bf16 pass when done per use,
// now 0.01%). Each
// angle is the f32 product t * inv_freq, as transformers computes it.
struct RopeTable {
  std::vector<float> cos, sin;
};

RopeTable MakeRopeTable(const std::vector<float>& inv_freq, int64_t positions) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  RopeTable table;
  table.cos.resize(positions * half);
  table.sin.resize(positions * half);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < positions; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(t) * inv_freq[i];
      table.cos[t * half + i] = std::cos(angle);
      table.sin[t * half + i] = std::sin(angle);
    }
  }
  return table;
}

// Rows x[0, tokens) at positions [first_position, first_position + tokens).
void ApplyRope(const RopeConfig& r, const RopeTable& table, float* x, int64_t tokens, int heads,
               int head_dim, int64_t row_stride, int64_t first_position) {
  const int half = r.rotary_dim / 2;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* cs = &table.cos[(first_position + t) * half];
    const float* sn = &table.sin[(first_position + t) * half];
    for (int h = 0; h < heads; ++h) {
      float* v = x + t * row_stride + int64_t{h} * head_dim;
      for (int i = 0; i < half; ++i) {
        // Interleaved pairs (2i, 2i+1) or rotate-half pairs (i, i + half).
        const int a = r.interleaved ? 2 * i : i;
        const int b = r.interleaved ? 2 * i + 1 : i + half;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cs[i] - x1 * sn[i];
        v[b] = x1 * cs[i] + x0 * sn[i];
      }
    }
  }
}

// gate = silu(gate) * up, in place; a function of its own for the same reason as SoftmaxRow.
__attribute__((noinline)) void SwiGlu(float* gate, const float* up, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) gate[i] = SwiGluOf(gate[i], up[i]);
}

// gate = gelu_tanh(gate) * up, in place (Gemma's GeGLU), as transformers' gelu_pytorch_tanh.
__attribute__((noinline)) void GeGlu(float* gate, const float* up, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = 0.5f * g * (1.f + std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g))) * up[i];
  }
}

// The architecture's gated activation over rows of gate [rows, n] and up, in place into gate.
void GatedActivation(MlpActivation activation, float* gate, const float* up, int64_t rows,
                     int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    if (activation == MlpActivation::kSilu) {
      SwiGlu(gate + r * n, up + r * n, n);
    } else {
      GeGlu(gate + r * n, up + r * n, n);
    }
  }
}

struct Buffers {
  // The matmuls' outputs on huge pages (aligned_vector.h); the rest alike, for simplicity.
  internal::HugePageVector<float> h, q, k, v, attn, o, gate, up, down;
  // One branch of a tree with its prefix, gathered: q, k, v, the attention's output; what a tap
  // sees of a branch.
  std::vector<float> view_q, view_k, view_v, view_out, view_in, view_down;
  LinearInputStorage input;  // the converted copies of the LinearInput in use
  LinearScratch scratch;
};

absl::Status CheckEdits(const Model& model, absl::Span<const SequenceInput> batch) {
  for (const SequenceInput& in : batch) {
    if (in.edits == nullptr) continue;
    if (auto st = in.edits->Validate(model); !st.ok()) return st;
    for (const ActivationEdit& e : in.edits->activations) {
      if (e.token >= static_cast<int64_t>(in.tokens.size())) {
        return absl::InvalidArgumentError(
            absl::StrFormat("activation edit at token %d past the sequence's %d tokens", e.token,
                            in.tokens.size()));
      }
    }
  }
  return absl::OkStatus();
}

// rows [0, view.size()) of the view into dst [view.size(), width], from x (the sequence's rows,
// `width` floats apart).
void GatherView(const SequenceView& view, const float* x, int64_t width, std::vector<float>* dst) {
  dst->resize(view.size() * width);
  std::copy_n(x, view.prefix * width, dst->data());
  std::copy_n(x + view.branch_begin * width, view.branch_rows * width,
              dst->data() + view.prefix * width);
}

// Every tree's branches within its tokens, a prefix of at least one token before them.
absl::Status CheckBranches(absl::Span<const SequenceInput> batch) {
  for (size_t s = 0; s < batch.size(); ++s) {
    int64_t branch_rows = 0;
    for (int64_t n : batch[s].branches) {
      if (n < 0) return absl::InvalidArgumentError("a branch of negative length");
      branch_rows += n;
    }
    if (!batch[s].branches.empty() && branch_rows >= static_cast<int64_t>(batch[s].tokens.size())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d: branches of %d tokens leave no prefix of its %d", s,
                          branch_rows, batch[s].tokens.size()));
    }
  }
  return absl::OkStatus();
}

// The sequence each row of a batch belongs to.
std::vector<int> SequenceOfRows(const std::vector<int64_t>& offsets) {
  std::vector<int> sequence_of(offsets.back());
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    std::fill(sequence_of.begin() + offsets[s], sequence_of.begin() + offsets[s + 1],
              static_cast<int>(s));
  }
  return sequence_of;
}

// out[r, e.row] += (e.value - W[e.row, e.col]) * in[r, e.col] for every weight edit of
// (layer, expert, kind) of the sequence row r belongs to: rows[r] is r's row in the batch
// (nullptr: r itself), `in` and `out` [count, w.cols] and [count, w.rows].
void CorrectForWeightEdits(const Matrix& w, absl::Span<const SequenceInput> batch,
                           const std::vector<int>& sequence_of, const int64_t* rows, int64_t count,
                           int layer, int expert, LinearKind kind, const float* in, float* out) {
  for (const SequenceInput& seq : batch) {
    if (seq.edits == nullptr) continue;
    for (const WeightEdit& e : seq.edits->weights) {
      if (e.layer != layer || e.expert != expert || e.kind != kind) continue;
      const int s = static_cast<int>(&seq - batch.data());
      const float delta = e.value - w.At(e.row, e.col);
      for (int64_t r = 0; r < count; ++r) {
        if (sequence_of[rows != nullptr ? rows[r] : r] != s) continue;
        out[r * w.rows + e.row] += delta * in[r * w.cols + e.col];
      }
    }
  }
}

// The routed experts of a mixture-of-experts layer over the batch's MLP input h [N, hidden]: each
// token's top-k experts by the router's softmax (less those its sequence prunes), their
// outputs weighted and summed into y [N, hidden] expert after expert, as transformers sums them.
absl::Status RunExperts(const Model& model, int layer, absl::Span<const SequenceInput> batch,
                        const std::vector<int64_t>& offsets, const std::vector<int>& sequence_of,
                        const std::vector<SequenceView>& views, const LinearInput& h,
                        const ForwardOptions& options, float* y) {
  const ModelConfig& c = model.config;
  const LayerWeights& w = model.layers[layer];
  const int64_t N = offsets.back(), D = c.hidden, E = c.experts, K = c.experts_per_token;
  const int64_t EI = c.expert_intermediate;
  LinearScratch scratch;
  std::vector<float> logits(N * E);
  if (absl::Status s = Linear(w.router, h, logits.data(), E, &scratch); !s.ok()) return s;
  // Routing: softmax in f32 over the experts not pruned, the k most probable (the lower index on
  // ties), renormalized where the model says.
  std::vector<std::vector<std::pair<int64_t, float>>> routed(E);  // per expert: (row, weight)
  std::vector<char> pruned(E);
  std::vector<int> order(E);
  for (int64_t t = 0; t < N; ++t) {
    std::fill(pruned.begin(), pruned.end(), 0);
    if (const EditSet* edits = batch[sequence_of[t]].edits) {
      for (const ExpertId& p : edits->pruned_experts) {
        if (p.layer == layer) pruned[p.expert] = 1;
      }
    }
    float* row = &logits[t * E];
    float mx = -INFINITY;
    for (int64_t e = 0; e < E; ++e) {
      if (!pruned[e]) mx = std::max(mx, row[e]);
    }
    float sum = 0;
    for (int64_t e = 0; e < E; ++e) {
      row[e] = pruned[e] ? 0.f : std::exp(row[e] - mx);
      sum += row[e];
    }
    for (int e = 0; e < E; ++e) order[e] = e;
    std::partial_sort(order.begin(), order.begin() + K, order.end(), [row](int a, int b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    float chosen = 0;
    for (int64_t i = 0; i < K; ++i) chosen += row[order[i]] / sum;
    for (int64_t i = 0; i < K; ++i) {
      if (pruned[order[i]]) continue;  // fewer experts left than k
      const float p = row[order[i]] / sum;
      routed[order[i]].push_back({t, c.norm_topk ? p / chosen : p});
    }
  }
  std::fill(y, y + N * D, 0.f);
  std::vector<int64_t> rows;
  std::vector<float> in, gate, up, down;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = static_cast<int64_t>(routed[e].size());
    if (n == 0) continue;
    const ExpertWeights& x = w.experts[e];
    rows.resize(n);
    in.resize(n * D);
    for (int64_t r = 0; r < n; ++r) {
      rows[r] = routed[e][r].first;
      std::copy_n(h.f32 + rows[r] * D, D, &in[r * D]);
    }
    gate.resize(n * EI);
    up.resize(n * EI);
    down.resize(n * D);
    auto linear = [&](const Matrix& m, LinearKind kind, const float* input, float* output) {
      absl::Status s = Linear(m, input, n, output, m.rows, options.precision, &scratch);
      if (s.ok()) {
        CorrectForWeightEdits(m, batch, sequence_of, rows.data(), n, layer, static_cast<int>(e),
                              kind, input, output);
      }
      return s;
    };
    if (absl::Status s = linear(x.gate, LinearKind::kGate, in.data(), gate.data()); !s.ok()) {
      return s;
    }
    if (absl::Status s = linear(x.up, LinearKind::kUp, in.data(), up.data()); !s.ok()) return s;
    GatedActivation(c.traits().activation, gate.data(), up.data(), n, EI);
    if (absl::Status s = linear(x.down, LinearKind::kDown, gate.data(), down.data()); !s.ok()) {
      return s;
    }
    // Each sequence's rows are contiguous and in order: its activation edits, then its report.
    std::vector<int> positions, view_positions;
    std::vector<float> view_in, view_out;
    for (int64_t r0 = 0; r0 < n;) {
      const int s = sequence_of[rows[r0]];
      int64_t r1 = r0;
      positions.clear();
      while (r1 < n && sequence_of[rows[r1]] == s) {
        positions.push_back(static_cast<int>(rows[r1] - offsets[s]));
        ++r1;
      }
      if (const EditSet* edits = batch[s].edits) {
        for (const ActivationEdit& a : edits->activations) {
          if (a.layer != layer || a.expert != e) continue;
          for (int64_t r = r0; r < r1; ++r) {
            if (positions[r - r0] == a.token) down[r * D + a.channel] = a.value;
          }
        }
      }
      // The tap sees each view's rows among them, at the view's positions.
      for (size_t v = 0; options.tap != nullptr && v < views.size(); ++v) {
        const SequenceView& view = views[v];
        if (view.sequence != s) continue;
        view_positions.clear();
        view_in.clear();
        view_out.clear();
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t p = positions[r - r0];
          const bool in_branch = p >= view.branch_begin && p < view.branch_begin + view.branch_rows;
          if (p >= view.prefix && !in_branch) continue;
          view_positions.push_back(
              static_cast<int>(in_branch ? view.prefix + p - view.branch_begin : p));
          view_in.insert(view_in.end(), &gate[r * EI], &gate[(r + 1) * EI]);
          view_out.insert(view_out.end(), &down[r * D], &down[(r + 1) * D]);
        }
        if (view_positions.empty()) continue;
        options.tap->OnExpertDownProj(layer, static_cast<int>(e), static_cast<int>(v),
                                      view_positions.data(), view_in.data(), view_out.data(),
                                      static_cast<int>(view_positions.size()), static_cast<int>(EI),
                                      static_cast<int>(D));
      }
      r0 = r1;
    }
    for (int64_t r = 0; r < n; ++r) {
      const float weight = routed[e][r].second;
      float* dst = y + rows[r] * D;
      for (int64_t i = 0; i < D; ++i) dst[i] += weight * down[r * D + i];
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<float> InverseFrequencies(const RopeConfig& r) {
  const int half = r.rotary_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    inv[i] = 1.f / std::pow(r.theta, static_cast<float>(2 * i) / r.rotary_dim);
    if (r.linear_factor != 1.f) inv[i] /= r.linear_factor;
    if (!r.freq_factors.empty()) inv[i] /= r.freq_factors[i];
  }
  if (r.llama3_factor > 0) {
    const float old_len = static_cast<float>(r.llama3_original_max_positions);
    const float low_wavelen = old_len / r.llama3_low_freq_factor;
    const float high_wavelen = old_len / r.llama3_high_freq_factor;
    for (float& f : inv) {
      const float wavelen = 2.f * static_cast<float>(M_PI) / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = f / r.llama3_factor;
      } else {
        const float smooth = (old_len / wavelen - r.llama3_low_freq_factor) /
                             (r.llama3_high_freq_factor - r.llama3_low_freq_factor);
        f = (1 - smooth) * f / r.llama3_factor + smooth * f;
      }
    }
  }
  return inv;
}

std::vector<SequenceView> ViewsOf(absl::Span<const SequenceInput> batch) {
  std::vector<SequenceView> views;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t rows = static_cast<int64_t>(batch[s].tokens.size());
    if (batch[s].branches.empty()) {
      views.push_back({static_cast<int>(s), rows, rows, 0});
      continue;
    }
    int64_t prefix = rows;
    for (int64_t n : batch[s].branches) prefix -= n;
    int64_t begin = prefix;
    for (int64_t n : batch[s].branches) {
      views.push_back({static_cast<int>(s), prefix, begin, n});
      begin += n;
    }
  }
  return views;
}

absl::StatusOr<ResidualStream> EmbedBatch(const Model& model,
                                          absl::Span<const SequenceInput> batch) {
  const ModelConfig& c = model.config;
  ResidualStream stream;
  stream.offsets.push_back(0);
  for (size_t s = 0; s < batch.size(); ++s) {
    if (batch[s].tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("sequence %d is empty", s));
    }
    for (int32_t id : batch[s].tokens) {
      if (id < 0 || id >= c.vocab) {
        return absl::InvalidArgumentError(
            absl::StrFormat("token id %d out of range [0, %d)", id, c.vocab));
      }
    }
    stream.offsets.push_back(stream.offsets.back() + batch[s].tokens.size());
  }
  if (absl::Status st = CheckBranches(batch); !st.ok()) return st;
  const ScopedFlushSubnormals flush;
  const int64_t D = c.hidden;
  stream.x.resize(stream.offsets.back() * D);
  for (size_t s = 0; s < batch.size(); ++s) {
    for (size_t t = 0; t < batch[s].tokens.size(); ++t) {
      const int64_t row = stream.offsets[s] + t;
      DequantizeRow(model.embed.dtype, model.embed.Row(batch[s].tokens[t]), D, &stream.x[row * D]);
    }
  }
  if (c.traits().embedding_scaled) {
    const float scale = std::sqrt(static_cast<float>(D));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(stream.x.size()); ++i) stream.x[i] *= scale;
  }
  return stream;
}

absl::Status RunLayers(const Model& model, absl::Span<const SequenceInput> batch, int end_layer,
                       const ForwardOptions& options, ResidualStream* stream) {
  const ModelConfig& c = model.config;
  const std::vector<int64_t>& offsets = stream->offsets;
  bool same_batch = offsets.size() == batch.size() + 1;
  for (size_t s = 0; same_batch && s < batch.size(); ++s) {
    same_batch = offsets[s + 1] - offsets[s] == static_cast<int64_t>(batch[s].tokens.size());
  }
  if (!same_batch) {
    return absl::InvalidArgumentError("the batch is not the one the residual stream is of");
  }
  if (end_layer < stream->layer || end_layer > c.layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layers [%d, %d) outside the model's %d layers", stream->layer, end_layer, c.layers));
  }
  if (auto st = CheckEdits(model, batch); !st.ok()) return st;
  if (auto st = CheckBranches(batch); !st.ok()) return st;
  if (end_layer == stream->layer) return absl::OkStatus();
  const ScopedFlushSubnormals flush;
  const int64_t N = offsets.back();
  const int64_t D = c.hidden, I = c.intermediate;
  const int64_t QD = int64_t{c.heads} * c.head_dim, KVD = int64_t{c.kv_heads} * c.head_dim;
  internal::HugePageVector<float>& x = stream->x;
  Buffers b;
  b.h.resize(N * D);
  b.q.resize(N * QD);
  b.k.resize(N * KVD);
  b.v.resize(N * KVD);
  b.attn.resize(N * QD);
  // b.o, b.up and b.down only where the outputs they hold are not fused away.
  b.gate.resize(N * I);
  int64_t longest = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    longest = std::max(longest, offsets[s + 1] - offsets[s]);
  }
  const RopeTable rope = MakeRopeTable(InverseFrequencies(c.rope), longest);
  const RopeTable sliding_rope = c.sliding_layers.empty()
                                     ? RopeTable{}
                                     : MakeRopeTable(InverseFrequencies(c.sliding_rope), longest);
  const ArchitectureTraits& traits = c.traits();
  const bool pre_norms = traits.norm_placement != NormPlacement::kPost;
  const bool post_norms = traits.norm_placement != NormPlacement::kPre;
  const bool moe = c.experts > 0;
  if (moe && model.activation_transform != nullptr) {
    return absl::UnimplementedError(
        "activation quantization of mixture-of-experts layers is not supported");
  }
  // The transform quantizes a sequence's activations with one step (activation_quant.h): a tree's
  // would take its branches' together, which no branch alone does.
  for (const SequenceInput& in : batch) {
    if (model.activation_transform != nullptr && !in.branches.empty()) {
      return absl::UnimplementedError("a tree on a model with activation quantization");
    }
  }

  const std::vector<int> sequence_of = SequenceOfRows(offsets);
  const std::vector<SequenceView> views = ViewsOf(batch);
  // Whether any sequence edits a weight of `layer`'s `one` or `other`: the fused paths then
  // give way to plain outputs that the edits can correct.
  auto weights_edited = [&](int layer, LinearKind one, LinearKind other) {
    for (const SequenceInput& in : batch) {
      if (in.edits == nullptr) continue;
      for (const WeightEdit& e : in.edits->weights) {
        if (e.layer == layer && e.expert < 0 && (e.kind == one || e.kind == other)) return true;
      }
    }
    return false;
  };
  // y = x W^T for all tokens, then each sequence's weight edits on this (layer, kind).
  auto linear = [&](int layer, LinearKind kind, const LinearInput& in_x,
                    float* out) -> absl::Status {
    const Matrix& w = model.layers[layer].Get(kind);
    const float* in = in_x.f32;
    if (absl::Status status = Linear(w, in_x, out, w.rows, &b.scratch); !status.ok()) {
      return status;
    }
    CorrectForWeightEdits(w, batch, sequence_of, nullptr, N, layer, -1, kind, in, out);
    return absl::OkStatus();
  };
  // The model's activation transform on each sequence's part of a linear input, before any
  // matmul reads it.
  auto transform_input = [&](int layer, LinearInputSite site, float* in, int64_t cols) {
    if (model.activation_transform == nullptr) return;
    for (size_t s = 0; s < batch.size(); ++s) {
      const int64_t o = offsets[s];
      model.activation_transform->Apply(layer, site, offsets[s + 1] - o, cols, in + o * cols);
    }
  };
  absl::Status status;
  auto add_bias_and_clip = [&](float* y, const std::vector<float>& bias, int64_t width) {
    if (bias.empty() && c.clip_qkv <= 0) return;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < N; ++t) {
      float* r = y + t * width;
      if (!bias.empty()) {
        for (int64_t i = 0; i < width; ++i) r[i] += bias[i];
      }
      if (c.clip_qkv > 0) {
        for (int64_t i = 0; i < width; ++i) r[i] = std::clamp(r[i], -c.clip_qkv, c.clip_qkv);
      }
    }
  };

  for (int l = stream->layer; l < end_layer; ++l) {
    if (options.cancelled != nullptr && options.cancelled->load(std::memory_order_relaxed)) {
      return absl::CancelledError("forward pass cancelled");
    }
    // Advanced before the layer runs: a failed layer leaves the stream unusable, not resumable.
    stream->layer = l + 1;
    const LayerWeights& w = model.layers[l];
    if (pre_norms) {
      Norm(c, w.attn_norm, x.data(), N, b.h.data());
    } else {
      std::copy_n(x.data(), N * D, b.h.data());
    }
    transform_input(l, LinearInputSite::kQkv, b.h.data(), D);
    const LinearInput attn_in(b.h.data(), N, D, options.precision, &b.input);
    for (auto [kind, out] : {std::pair{LinearKind::kQ, b.q.data()},
                             {LinearKind::kK, b.k.data()},
                             {LinearKind::kV, b.v.data()}}) {
      if (status = linear(l, kind, attn_in, out); !status.ok()) return status;
    }
    // q/k norms (none of these architectures has biases too) before the clipping (OLMoE).
    if (!w.q_norm.empty()) {
      RmsNormPieces(w.q_norm, c.norm_eps, b.q.data(), N, QD);
      RmsNormPieces(w.k_norm, c.norm_eps, b.k.data(), N, KVD);
    }
    add_bias_and_clip(b.q.data(), w.q_bias, QD);
    add_bias_and_clip(b.k.data(), w.k_bias, KVD);
    add_bias_and_clip(b.v.data(), w.v_bias, KVD);
    const bool sliding = c.Sliding(l);
    const RopeTable& layer_rope = sliding ? sliding_rope : rope;
    const AttentionShape shape{c.heads,        c.kv_heads,
                               c.head_dim,     c.attn_scale,
                               c.attn_softcap, sliding ? int64_t{c.sliding_window} : 0};
    for (size_t v = 0; v < views.size(); ++v) {
      const SequenceView& view = views[v];
      const int64_t o = offsets[view.sequence];
      // A plain sequence, or a tree's prefix: its rows once, attending as a plain sequence of
      // that length does.
      if (v == 0 || views[v - 1].sequence != view.sequence) {
        ApplyRope(c.RopeOf(l), layer_rope, &b.q[o * QD], view.prefix, c.heads, c.head_dim, QD, 0);
        ApplyRope(c.RopeOf(l), layer_rope, &b.k[o * KVD], view.prefix, c.kv_heads, c.head_dim, KVD,
                  0);
        status = CausalAttention(shape, &b.q[o * QD], &b.k[o * KVD], &b.v[o * KVD], view.prefix,
                                 &b.attn[o * QD], options.precision);
        if (!status.ok()) return status;
      }
      if (view.branch_rows == 0) continue;
      // A branch: its rows after the prefix's, and the attention of prefix + branch as one
      // sequence, which answers the branch's rows only.
      const int64_t br = o + view.branch_begin;
      ApplyRope(c.RopeOf(l), layer_rope, &b.q[br * QD], view.branch_rows, c.heads, c.head_dim, QD,
                view.prefix);
      ApplyRope(c.RopeOf(l), layer_rope, &b.k[br * KVD], view.branch_rows, c.kv_heads, c.head_dim,
                KVD, view.prefix);
      GatherView(view, &b.q[o * QD], QD, &b.view_q);
      GatherView(view, &b.k[o * KVD], KVD, &b.view_k);
      GatherView(view, &b.v[o * KVD], KVD, &b.view_v);
      b.view_out.resize(view.size() * QD);
      status = CausalAttention(shape, b.view_q.data(), b.view_k.data(), b.view_v.data(),
                               view.size(), b.view_out.data(), options.precision, view.prefix);
      if (!status.ok()) return status;
      std::copy_n(&b.view_out[view.prefix * QD], view.branch_rows * QD, &b.attn[br * QD]);
    }
    // The attention output added into the residual stream as it leaves the kernel, where the
    // packed kernel serves and no weight edit has to be added to it first.
    transform_input(l, LinearInputSite::kO, b.attn.data(), QD);
    const LinearInput attn_out(b.attn.data(), N, QD, options.precision, &b.input);
    if (post_norms || weights_edited(l, LinearKind::kO, LinearKind::kO) ||
        !LinearAddTo(w.Get(LinearKind::kO), attn_out, x.data(), D)) {
      b.o.resize(N * D);
      if (status = linear(l, LinearKind::kO, attn_out, b.o.data()); !status.ok()) return status;
      if (post_norms) {
        AddNormed(c, w.post_attn_norm, b.o.data(), x.data(), N);
      } else {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < N * D; ++i) x[i] += b.o[i];
      }
    }

    if (pre_norms) {
      Norm(c, w.ffn_norm, x.data(), N, b.h.data());
    } else {
      std::copy_n(x.data(), N * D, b.h.data());
    }
    transform_input(l, LinearInputSite::kGateUp, b.h.data(), D);
    const LinearInput ffn_in(b.h.data(), N, D, options.precision, &b.input);
    std::vector<float> experts_out;  // the routed experts' sum, where the layer has experts
    if (moe) {
      experts_out.resize(N * D);
      if (status = RunExperts(model, l, batch, offsets, sequence_of, views, ffn_in, options,
                              experts_out.data());
          !status.ok()) {
        return status;
      }
      if (!traits.shared_expert) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < N * D; ++i) x[i] += experts_out[i];
        continue;
      }
    }
    // Gate, up and their SwiGLU in one pass over the products where the packed kernel serves
    // and no weight edit of this layer's gate or up has to be added to their outputs first.
    const bool silu = traits.activation == MlpActivation::kSilu;
    if (!silu || weights_edited(l, LinearKind::kGate, LinearKind::kUp) ||
        !LinearSwiGlu(w.Get(LinearKind::kGate), w.Get(LinearKind::kUp), ffn_in, b.gate.data(), I)) {
      b.up.resize(N * I);
      if (status = linear(l, LinearKind::kGate, ffn_in, b.gate.data()); !status.ok()) return status;
      if (status = linear(l, LinearKind::kUp, ffn_in, b.up.data()); !status.ok()) return status;
      GatedActivation(traits.activation, b.gate.data(), b.up.data(), N, I);
    }
    // The MLP's output likewise straight into the residual stream, unless a tap has to see it or
    // an edit has to change it first.
    transform_input(l, LinearInputSite::kDown, b.gate.data(), I);
    const LinearInput mlp_in(b.gate.data(), N, I, options.precision, &b.input);
    bool activations_edited = false;
    for (const SequenceInput& in : batch) {
      if (in.edits == nullptr) continue;
      for (const ActivationEdit& e : in.edits->activations) {
        activations_edited |= e.layer == l && e.expert < 0;
      }
    }
    if (options.tap == nullptr && !activations_edited && !post_norms && !moe &&
        !weights_edited(l, LinearKind::kDown, LinearKind::kDown) &&
        LinearAddTo(w.Get(LinearKind::kDown), mlp_in, x.data(), D)) {
      continue;
    }
    b.down.resize(N * D);
    if (status = linear(l, LinearKind::kDown, mlp_in, b.down.data()); !status.ok()) return status;
    for (size_t s = 0; s < batch.size(); ++s) {
      const int64_t o = offsets[s];
      if (batch[s].edits != nullptr) {
        for (const ActivationEdit& e : batch[s].edits->activations) {
          if (e.layer == l && e.expert < 0) b.down[(o + e.token) * D + e.channel] = e.value;
        }
      }
    }
    for (size_t v = 0; options.tap != nullptr && v < views.size(); ++v) {
      const SequenceView& view = views[v];
      const int64_t o = offsets[view.sequence];
      const float* in = &b.gate[o * I];
      const float* out = &b.down[o * D];
      if (!batch[view.sequence].branches.empty()) {
        GatherView(view, in, I, &b.view_in);
        GatherView(view, out, D, &b.view_down);
        in = b.view_in.data();
        out = b.view_down.data();
      }
      options.tap->OnDownProj(l, static_cast<int>(v), in, out, static_cast<int>(view.size()), I, D);
    }
    if (moe) {  // the shared expert, gated, beside the routed experts' sum
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < N; ++t) {
        float dot = 0;
        for (int64_t i = 0; i < D; ++i) dot += b.h[t * D + i] * w.shared_expert_gate[i];
        const float gate = 1.f / (1.f + std::exp(-dot));
        for (int64_t i = 0; i < D; ++i) {
          b.down[t * D + i] = experts_out[t * D + i] + gate * b.down[t * D + i];
        }
      }
    }
    if (post_norms) {  // the super activation is the down projection's output, before this norm
      AddNormed(c, w.post_ffn_norm, b.down.data(), x.data(), N);
      continue;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * D; ++i) x[i] += b.down[i];
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardOutput> FinishForward(const Model& model, const ResidualStream& stream) {
  if (stream.layer != model.config.layers) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the residual stream is before layer %d of %d", stream.layer, model.config.layers));
  }
  const ScopedFlushSubnormals flush;
  ForwardOutput result;
  result.offsets = stream.offsets;
  result.hidden.resize(stream.offsets.back() * model.config.hidden);
  Norm(model.config, model.final_norm, stream.x.data(), stream.offsets.back(),
       result.hidden.data());
  return result;
}

void ReleasePassBuffers() { internal::ReleaseKeptMappings(); }

absl::StatusOr<ForwardOutput> RunForward(const Model& model, absl::Span<const SequenceInput> batch,
                                         const ForwardOptions& options) {
  absl::StatusOr<ResidualStream> stream = EmbedBatch(model, batch);
  if (!stream.ok()) return stream.status();
  if (absl::Status s = RunLayers(model, batch, model.config.layers, options, &*stream); !s.ok()) {
    return s;
  }
  return FinishForward(model, *stream);
}

int FirstEditedLayer(const Model& model, absl::Span<const SequenceInput> batch) {
  int first = model.config.layers;
  for (const SequenceInput& in : batch) {
    if (in.edits != nullptr) first = in.edits->FirstLayer(first);
  }
  return first;
}

IntactPass::IntactPass(const Model& model, absl::Span<const SequenceInput> batch,
                       const ForwardOptions& options)
    : model_(model), options_(options) {
  options_.tap = nullptr;
  for (const SequenceInput& in : batch) batch_.push_back({in.tokens, nullptr, in.branches});
}

absl::StatusOr<ResidualStream> IntactPass::Before(int layer) {
  if (layer < 0 || layer > model_.config.layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer %d outside the model's %d layers", layer, model_.config.layers));
  }
  if (!stream_.has_value() || stream_->layer > layer) {
    absl::StatusOr<ResidualStream> embedded = EmbedBatch(model_, batch_);
    if (!embedded.ok()) return embedded.status();
    if (stream_.has_value()) {  // already past it: this copy alone goes from the embeddings
      if (absl::Status s = RunLayers(model_, batch_, layer, options_, &*embedded); !s.ok()) {
        return s;
      }
      return embedded;
    }
    stream_ = std::move(*embedded);
  }
  if (absl::Status s = RunLayers(model_, batch_, layer, options_, &*stream_); !s.ok()) {
    stream_.reset();  // cut off mid-layer
    return s;
  }
  return *stream_;
}

absl::Status IntactPass::Watch(int layer, ForwardTap* tap) {
  if (layer >= model_.config.layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer %d outside the model's %d layers", layer, model_.config.layers));
  }
  absl::StatusOr<ResidualStream> copy = Before(layer);
  if (!copy.ok()) return copy.status();
  ForwardOptions watched = options_;
  watched.tap = tap;
  return RunLayers(model_, batch_, layer + 1, watched, &*copy);
}

absl::StatusOr<ForwardOutput> IntactPass::RunEdited(absl::Span<const SequenceInput> edited) {
  absl::StatusOr<ResidualStream> stream = Before(FirstEditedLayer(model_, edited));
  if (!stream.ok()) return stream.status();
  if (absl::Status s = RunLayers(model_, edited, model_.config.layers, options_, &*stream);
      !s.ok()) {
    return s;
  }
  return FinishForward(model_, *stream);
}

absl::Status ComputeLogits(const Model& model, const float* hidden, int64_t rows, float* logits,
                           Precision precision) {
  const ScopedFlushSubnormals flush;
  LinearScratch scratch;
  absl::Status status =
      Linear(model.lm_head, hidden, rows, logits, model.lm_head.rows, precision, &scratch);
  if (status.ok()) SoftcapLogits(model.config, logits, rows * model.lm_head.rows);
  return status;
}

void SoftcapLogits(const ModelConfig& config, float* logits, int64_t n) {
  const float cap = config.final_softcap;
  if (cap <= 0) return;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) logits[i] = cap * std::tanh(logits[i] / cap);
}

}  // namespace superweight
