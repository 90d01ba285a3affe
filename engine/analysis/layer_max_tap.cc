#include "engine/analysis/layer_max_tap.h"

#include <cmath>
#include <cstdint>

namespace superweight {

void LayerMaxTap::OnDownProj(int layer, int sequence, const float* input, const float* output,
                             int tokens, int intermediate, int hidden) {
  LayerMax& m = stats_[sequence][layer];
  m = LayerMax();
  for (int t = 0; t < tokens; ++t) {
    for (int i = 0; i < intermediate; ++i) {
      const float a = std::fabs(input[int64_t{t} * intermediate + i]);
      if (a > m.input_max_abs) {
        m.input_max_abs = a;
        m.input_token = t;
        m.input_channel = i;
      }
    }
    for (int i = 0; i < hidden; ++i) {
      const float v = output[int64_t{t} * hidden + i];
      if (std::fabs(v) > m.output_max_abs) {
        m.output_max_abs = std::fabs(v);
        m.output_value = v;
        m.output_token = t;
        m.output_channel = i;
      }
    }
  }
  if (m.output_token >= 0) {
    const float* row = input + int64_t{m.output_token} * intermediate;
    m.input_at_output_token.assign(row, row + intermediate);
  }
}

}  // namespace superweight
