// The tap of the paper's method: per sequence and layer, the largest |down_proj input| and
// |down_proj output|, where they occur, and the input row at the output maximum's token.
#pragma once

#include <vector>

#include "engine/runtime/tap.h"

namespace superweight {

// Over a mixture-of-experts layer, the maxima are over every expert's routed tokens (and the
// shared expert's), each with the expert it is in (-1: the layer's own down_proj).
struct LayerMax {
  float input_max_abs = 0;
  int input_token = -1;
  int input_channel = -1;
  int input_expert = -1;
  float output_max_abs = 0;
  float output_value = 0;  // signed value at the output maximum
  int output_token = -1;
  int output_channel = -1;
  int output_expert = -1;
  // The whole input row at output_token [intermediate]: Locate picks the column that
  // contributes most to the spike from it.
  std::vector<float> input_at_output_token;
  // Mixture of experts: each expert's largest |down_proj output| over its routed tokens (0 for
  // an expert no token reached).
  std::vector<float> expert_output_max_abs;
};

class LayerMaxTap : public ForwardTap {
 public:
  LayerMaxTap(int sequences, int layers) : stats_(sequences, std::vector<LayerMax>(layers)) {}
  void OnDownProj(int layer, int sequence, const float* input, const float* output, int tokens,
                  int intermediate, int hidden) override;
  void OnExpertDownProj(int layer, int expert, int sequence, const int* positions,
                        const float* input, const float* output, int rows, int intermediate,
                        int hidden) override;
  const std::vector<LayerMax>& layers(int sequence) const { return stats_[sequence]; }

 private:
  // Folds rows of one down_proj (positions[r] their tokens; r where null) into the maxima.
  void Observe(int layer, int expert, int sequence, const int* positions, const float* input,
               const float* output, int rows, int intermediate, int hidden);

  std::vector<std::vector<LayerMax>> stats_;
};

}  // namespace superweight
