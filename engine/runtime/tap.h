// Taps: what a forward pass reports to an analysis, instead of materialising all activations.
#pragma once

namespace superweight {

class ForwardTap {
 public:
  virtual ~ForwardTap() = default;
  // Once per layer and sequence: the down_proj input (the SwiGLU product) as
  // [tokens, intermediate] and its output as [tokens, hidden], after any edits.
  virtual void OnDownProj(int layer, int sequence, const float* input, const float* output,
                          int tokens, int intermediate, int hidden) = 0;
};

}  // namespace superweight
