#include "engine/analysis/layer_max_tap.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace superweight {

void LayerMaxTap::OnDownProj(int layer, int sequence, const float* input, const float* output,
                             int tokens, int intermediate, int hidden) {
  Observe(layer, -1, sequence, nullptr, input, output, tokens, intermediate, hidden);
}

void LayerMaxTap::OnExpertDownProj(int layer, int expert, int sequence, const int* positions,
                                   const float* input, const float* output, int rows,
                                   int intermediate, int hidden) {
  Observe(layer, expert, sequence, positions, input, output, rows, intermediate, hidden);
}

void LayerMaxTap::Observe(int layer, int expert, int sequence, const int* positions,
                          const float* input, const float* output, int rows, int intermediate,
                          int hidden) {
  LayerMax& m = stats_[sequence][layer];
  int best_row = -1;
  float expert_max = 0;
  for (int r = 0; r < rows; ++r) {
    const int token = positions != nullptr ? positions[r] : r;
    for (int i = 0; i < intermediate; ++i) {
      const float a = std::fabs(input[int64_t{r} * intermediate + i]);
      if (a > m.input_max_abs) {
        m.input_max_abs = a;
        m.input_token = token;
        m.input_channel = i;
        m.input_expert = expert;
      }
    }
    for (int i = 0; i < hidden; ++i) {
      const float v = output[int64_t{r} * hidden + i];
      expert_max = std::max(expert_max, std::fabs(v));
      if (std::fabs(v) > m.output_max_abs) {
        m.output_max_abs = std::fabs(v);
        m.output_value = v;
        m.output_token = token;
        m.output_channel = i;
        m.output_expert = expert;
        best_row = r;
      }
    }
  }
  if (best_row >= 0) {
    const float* row = input + int64_t{best_row} * intermediate;
    m.input_at_output_token.assign(row, row + intermediate);
  }
  if (expert >= 0) {
    if (m.expert_output_max_abs.size() <= static_cast<size_t>(expert)) {
      m.expert_output_max_abs.resize(expert + 1, 0.f);
    }
    m.expert_output_max_abs[expert] = std::max(m.expert_output_max_abs[expert], expert_max);
  }
}

}  // namespace superweight
