// Locating super weights with the paper's one-pass method, iterated, then confirmed by effect.
//  1. Run a prompt; per layer, the largest |down_proj output| and where it is (LayerMaxTap).
//  2. The layer with the largest spike, if past `threshold` and `spike_ratio` times the median
//     of the other layers, holds a candidate: row = the output channel, col = the input channel
//     contributing most to it, argmax_c |W[row, c] * x[token, c]| (the paper takes the largest
//     |x[token, c]|, which is the same whenever the super activation's input is the outlier it
//     usually is, and wrong when a large weight meets an ordinary input).
//  3. Zero it and run again; repeat until no layer spikes.
//  4. Confirmation: perplexity of a text with each candidate alone zeroed, against the intact
//     model. Spikes whose removal barely matters are reported, but not as super weights.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/layer_max_tap.h"
#include "engine/runtime/forward.h"

namespace superweight {

inline constexpr char kPaperPrompt[] = "Apple Inc. is a worldwide tech company.";

struct LocateOptions {
  float threshold = 50.f;    // |down_proj output| that counts as a spike (the paper's value)
  float spike_ratio = 10.f;  // ... and at least this many times the median layer's maximum
  int max_iterations = 8;
  Precision precision = Precision::kF32;
  // Confirmation (skipped when empty): perplexity over these tokens in windows of `window`.
  std::vector<int32_t> confirm_tokens;
  int confirm_window = 512;
  int confirm_max_windows = 2;
  float confirm_ratio = 1.5f;  // confirmed when zeroing multiplies perplexity by at least this
  const std::atomic<bool>* cancelled = nullptr;
  std::function<void(double)> on_progress;
};

struct SuperWeight {
  int layer = 0;
  int expert = -1;  // the routed expert whose down_proj holds it; -1: the layer's own
  int64_t row = 0;  // hidden channel: down_proj.weight[row, col] in the Hugging Face layout
  int64_t col = 0;  // intermediate channel
  float weight = 0;
  float input_activation = 0;   // down_proj input at (token, col)
  float output_activation = 0;  // down_proj output at (token, row)
  int token = 0;
  int iteration = 0;
  bool confirmed = false;
  double perplexity_zeroed = 0;  // 0 when not measured
};

// An expert of a mixture-of-experts layer with its largest |down_proj output| on the prompt.
struct ExpertMax {
  int layer = 0;
  int expert = 0;
  float output_max_abs = 0;
};

// Super experts by the rule of Su et al. (2025): an expert whose largest down_proj output is
// above the 99.5th percentile (linear interpolation) of every expert's, all layers together, and
// above a tenth of the largest; and, since with fewer than 200 experts that percentile always
// leaves the largest above it, at least `floor` (Locate's spike threshold). From a pass's
// per-layer maxima; none for a dense model.
std::vector<ExpertMax> ExpertMaxima(const std::vector<LayerMax>& layers, int experts);
std::vector<ExpertMax> SuperExperts(const std::vector<ExpertMax>& maxima, float floor = 0.f);

struct LocateResult {
  std::vector<SuperWeight> candidates;  // in the order found
  // Mixture of experts: every expert's maximum on the intact model, and the super experts.
  std::vector<ExpertMax> expert_maxima;
  std::vector<ExpertMax> super_experts;
  std::vector<LayerMax> profile_before;  // per layer, intact model
  std::vector<LayerMax> profile_after;   // per layer, with every candidate zeroed
  int iterations = 0;
  double perplexity_intact = 0;  // 0 when not measured
  int ConfirmedCount() const;
};

absl::StatusOr<LocateResult> Locate(const Model& model, absl::Span<const int32_t> tokens,
                                    const LocateOptions& options);

}  // namespace superweight
