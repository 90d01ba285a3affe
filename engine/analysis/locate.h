// Locating super weights with the paper's one-pass method, iterated: run a prompt, find layers
// whose down_proj output spikes past a threshold, take (row = output channel, col = the input
// channel dominating that token), zero what was found and run again until nothing spikes.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/layer_max_tap.h"
#include "engine/runtime/forward.h"

namespace superweight {

inline constexpr char kPaperPrompt[] = "Apple Inc. is a worldwide tech company.";

struct LocateOptions {
  float threshold = 50.f;  // |down_proj output| that counts as a spike (the paper's value)
  int max_iterations = 8;
  Precision precision = Precision::kF32;
};

struct SuperWeight {
  int layer = 0;
  int64_t row = 0;  // hidden channel: down_proj.weight[row, col] in the Hugging Face layout
  int64_t col = 0;  // intermediate channel
  float weight = 0;
  float input_activation = 0;   // down_proj input at (token, col)
  float output_activation = 0;  // down_proj output at (token, row)
  int token = 0;
  int iteration = 0;
};

struct LocateResult {
  std::vector<SuperWeight> super_weights;
  std::vector<LayerMax> profile_before;  // per layer, intact model
  std::vector<LayerMax> profile_after;   // per layer, with everything found zeroed
  int iterations = 0;
};

absl::StatusOr<LocateResult> Locate(const Model& model, absl::Span<const int32_t> tokens,
                                    const LocateOptions& options);

}  // namespace superweight
