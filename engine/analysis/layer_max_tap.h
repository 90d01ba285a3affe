// The tap of the paper's method: per sequence and layer, the largest |down_proj input| and
// |down_proj output|, where they occur, and the input row at the output maximum's token.
#pragma once

#include <vector>

#include "engine/runtime/tap.h"

namespace superweight {

struct LayerMax {
  float input_max_abs = 0;
  int input_token = -1;
  int input_channel = -1;
  float output_max_abs = 0;
  float output_value = 0;  // signed value at the output maximum
  int output_token = -1;
  int output_channel = -1;
  // The whole input row at output_token [intermediate]: Locate picks the column that
  // contributes most to the spike from it.
  std::vector<float> input_at_output_token;
};

class LayerMaxTap : public ForwardTap {
 public:
  LayerMaxTap(int sequences, int layers) : stats_(sequences, std::vector<LayerMax>(layers)) {}
  void OnDownProj(int layer, int sequence, const float* input, const float* output, int tokens,
                  int intermediate, int hidden) override;
  const std::vector<LayerMax>& layers(int sequence) const { return stats_[sequence]; }

 private:
  std::vector<std::vector<LayerMax>> stats_;
};

}  // namespace superweight
