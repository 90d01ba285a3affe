#include "engine/analysis/locate.h"

#include <algorithm>

namespace superweight {

absl::StatusOr<LocateResult> Locate(const Model& model, absl::Span<const int32_t> tokens,
                                    const LocateOptions& options) {
  LocateResult result;
  EditSet edits;
  for (int iteration = 0; iteration <= options.max_iterations; ++iteration) {
    LayerMaxTap tap(1, model.config.layers);
    ForwardOptions fo;
    fo.precision = options.precision;
    fo.tap = &tap;
    SequenceInput input{tokens, &edits};
    auto out = RunForward(model, {&input, 1}, fo);
    if (!out.ok()) return out.status();
    const std::vector<LayerMax>& layers = tap.layers(0);
    if (iteration == 0) result.profile_before = layers;
    result.profile_after = layers;
    result.iterations = iteration + 1;
    if (iteration == options.max_iterations) break;
    int found = 0;
    for (int l = 0; l < model.config.layers; ++l) {
      const LayerMax& m = layers[l];
      if (m.output_max_abs < options.threshold) continue;
      const int64_t row = m.output_channel, col = m.input_channel_at_output_token;
      const bool known = std::any_of(edits.weights.begin(), edits.weights.end(), [&](auto& e) {
        return e.layer == l && e.row == row && e.col == col;
      });
      if (known) continue;
      const Matrix& down = model.layers[l].Get(LinearKind::kDown);
      result.super_weights.push_back({l, row, col, down.At(row, col),
                                      m.input_value_at_output_token, m.output_value,
                                      m.output_token, iteration});
      edits.weights.push_back({l, LinearKind::kDown, row, col, 0.f});
      ++found;
    }
    if (found == 0) break;
  }
  return result;
}

}  // namespace superweight
