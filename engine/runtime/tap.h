// Taps: what a forward pass reports to an analysis, instead of materialising all activations.
#pragma once

namespace superweight {

// A tree's branches (forward.h) are reported as sequences of their own, the prefix's rows then
// the branch's: `sequence` numbers the batch's views (ViewsOf).
class ForwardTap {
 public:
  virtual ~ForwardTap() = default;
  // Once per layer and sequence: the down_proj input (the SwiGLU product) as
  // [tokens, intermediate] and its output as [tokens, hidden], after any edits.
  virtual void OnDownProj(int layer, int sequence, const float* input, const float* output,
                          int tokens, int intermediate, int hidden) = 0;
  // Mixture-of-experts layers, instead: once per layer, sequence and expert, the tokens routed to
  // that expert (their positions in the sequence, ascending), its down_proj input
  // [rows, intermediate] and output [rows, hidden] at them, before the routing weights scale it.
  // An expert no token of the sequence reaches is not reported.
  virtual void OnExpertDownProj(int layer, int expert, int sequence, const int* positions,
                                const float* input, const float* output, int rows, int intermediate,
                                int hidden) {}
};

}  // namespace superweight
