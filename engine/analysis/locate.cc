#include "engine/analysis/locate.h"

#include <algorithm>
#include <cmath>

#include "engine/analysis/score.h"
#include "engine/formats/dequantize.h"

namespace superweight {
namespace {

// The median of the other layers' maxima: what "spikes far above the others" is measured
// against (with the layer itself included, a two-layer model could never spike).
float MedianOfOthers(const std::vector<LayerMax>& layers, size_t layer) {
  std::vector<float> v;
  for (size_t l = 0; l < layers.size(); ++l) {
    if (l != layer) v.push_back(layers[l].output_max_abs);
  }
  if (v.empty()) return 0.f;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace

std::vector<ExpertMax> ExpertMaxima(const std::vector<LayerMax>& layers, int experts) {
  std::vector<ExpertMax> maxima;
  if (experts <= 0) return maxima;
  for (size_t l = 0; l < layers.size(); ++l) {
    for (int e = 0; e < experts; ++e) {
      const std::vector<float>& m = layers[l].expert_output_max_abs;
      maxima.push_back({static_cast<int>(l), e, e < static_cast<int>(m.size()) ? m[e] : 0.f});
    }
  }
  return maxima;
}

std::vector<ExpertMax> SuperExperts(const std::vector<ExpertMax>& maxima, float floor) {
  std::vector<ExpertMax> flagged;
  if (maxima.empty()) return flagged;
  std::vector<double> sorted;
  for (const ExpertMax& m : maxima) sorted.push_back(m.output_max_abs);
  std::sort(sorted.begin(), sorted.end());
  const double at = 0.995 * static_cast<double>(sorted.size() - 1);
  const size_t below = static_cast<size_t>(at);
  const double percentile =
      below + 1 < sorted.size()
          ? sorted[below] + (at - static_cast<double>(below)) * (sorted[below + 1] - sorted[below])
          : sorted[below];
  for (const ExpertMax& m : maxima) {
    if (m.output_max_abs > percentile && m.output_max_abs > 0.1 * sorted.back() &&
        m.output_max_abs >= floor) {
      flagged.push_back(m);
    }
  }
  return flagged;
}

int LocateResult::ConfirmedCount() const {
  return static_cast<int>(std::count_if(candidates.begin(), candidates.end(),
                                        [](const SuperWeight& s) { return s.confirmed; }));
}

absl::StatusOr<LocateResult> Locate(const Model& model, absl::Span<const int32_t> tokens,
                                    const LocateOptions& options) {
  LocateResult result;
  EditSet edits;
  const bool confirm = !options.confirm_tokens.empty();
  const double search_share = confirm ? 0.3 : 1.0;
  for (int iteration = 0; iteration <= options.max_iterations; ++iteration) {
    LayerMaxTap tap(1, model.config.layers);
    ForwardOptions fo;
    fo.precision = options.precision;
    fo.tap = &tap;
    fo.cancelled = options.cancelled;
    SequenceInput input{tokens, &edits};
    auto out = RunForward(model, {&input, 1}, fo);
    if (!out.ok()) return out.status();
    const std::vector<LayerMax>& layers = tap.layers(0);
    if (iteration == 0) {
      result.profile_before = layers;
      result.expert_maxima = ExpertMaxima(layers, model.config.experts);
      result.super_experts = SuperExperts(result.expert_maxima, options.threshold);
    }
    result.profile_after = layers;
    result.iterations = iteration + 1;
    if (options.on_progress) {
      options.on_progress(search_share * (iteration + 1) / (options.max_iterations + 1));
    }
    if (iteration == options.max_iterations) break;
    int best = -1;
    for (int l = 0; l < model.config.layers; ++l) {
      const float floor =
          std::max(options.threshold, options.spike_ratio * MedianOfOthers(layers, l));
      if (layers[l].output_max_abs >= floor &&
          (best < 0 || layers[l].output_max_abs > layers[best].output_max_abs)) {
        best = l;
      }
    }
    if (best < 0) break;
    const LayerMax& m = layers[best];
    const Matrix* down = model.layers[best].Find(LinearKind::kDown, m.output_expert);
    if (down == nullptr) return absl::InternalError("a spike in a down_proj the model lacks");
    const int64_t row = m.output_channel;
    std::vector<float> w(down->cols);
    down->RowToFloat(row, w.data());
    int64_t col = 0;
    for (int64_t c = 1; c < down->cols; ++c) {
      if (std::fabs(w[c] * m.input_at_output_token[c]) >
          std::fabs(w[col] * m.input_at_output_token[col])) {
        col = c;
      }
    }
    const bool known = std::any_of(edits.weights.begin(), edits.weights.end(), [&](auto& e) {
      return e.layer == best && e.expert == m.output_expert && e.row == row && e.col == col;
    });
    if (known) break;  // zeroing it did not remove the spike: nothing more to find here
    SuperWeight sw;
    sw.layer = best;
    sw.expert = m.output_expert;
    sw.row = row;
    sw.col = col;
    sw.weight = w[col];
    sw.input_activation = m.input_at_output_token[col];
    sw.output_activation = m.output_value;
    sw.token = m.output_token;
    sw.iteration = iteration;
    result.candidates.push_back(sw);
    edits.weights.push_back({best, LinearKind::kDown, row, col, 0.f, m.output_expert});
  }
  if (!confirm || result.candidates.empty()) return result;

  // The intact text and every candidate zeroed alone, in one PerplexityPerSetting: batch after
  // batch the intact pass runs once, up to the lowest candidate's layer for the zeroed ones,
  // which continue from it (each perplexity bit for bit what it is alone).
  PerplexityOptions po;
  po.window = options.confirm_window;
  po.max_windows = options.confirm_max_windows;
  po.precision = options.precision;
  po.cancelled = options.cancelled;
  if (options.on_progress) {
    po.on_progress = [&](double done) {
      options.on_progress(search_share + (1 - search_share) * done);
    };
  }
  std::vector<BatchEdits> settings = {BatchEdits()};
  for (const SuperWeight& sw : result.candidates) {
    EditSet one;
    one.weights.push_back({sw.layer, LinearKind::kDown, sw.row, sw.col, 0.f, sw.expert});
    settings.push_back(SameEditsEverySequence(std::move(one)));
  }
  absl::StatusOr<std::vector<PerplexityResult>> perplexities =
      PerplexityPerSetting(model, options.confirm_tokens, po, settings);
  if (!perplexities.ok()) return perplexities.status();
  const double intact = perplexities->front().perplexity;
  result.perplexity_intact = intact;
  for (size_t i = 0; i < result.candidates.size(); ++i) {
    SuperWeight& sw = result.candidates[i];
    sw.perplexity_zeroed = (*perplexities)[i + 1].perplexity;
    sw.confirmed = sw.perplexity_zeroed >= options.confirm_ratio * intact;
  }
  return result;
}

}  // namespace superweight
