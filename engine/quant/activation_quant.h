// Round-to-nearest fake quantization of the activations that linear layers read, as the paper's
// W8A8 experiment and SmoothQuant's naive baseline define it: symmetric, one step per tensor
// (each sequence's activations at one site of one layer), step = max|x| / (2^(bits-1) - 1),
// value = round(x / step) * step. Chosen elements (the super activations, or each tensor's k
// largest) may be held out: replaced by the tensor's median before the step is computed, written
// back unchanged after.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/model.h"

namespace superweight {

// Holding out more than a few outliers per tensor is no longer the experiment (and each costs a
// median's worth of work once the held outnumber either half).
constexpr int kMaxHeldLargestActivations = 64;

// A channel whose largest-magnitude element in each tensor is held out of the quantization.
struct HeldActivationChannel {
  int layer = 0;
  LinearInputSite site = LinearInputSite::kQkv;
  int64_t channel = 0;
};

// x[n] fake-quantized in place; the elements at `held` (flat indices, distinct) keep their
// values and stand in for by the median when the step is computed. `scratch` is reused between
// calls (the median's copy, where one is needed).
void FakeQuantizeActivationTensor(float* x, int64_t n, int bits, absl::Span<const int64_t> held,
                                  std::vector<float>* scratch);

class ActivationQuantizer : public ActivationTransform {
 public:
  // held_largest: besides the held channels, each tensor's that many largest magnitudes (the
  // first index on ties) are held out, wherever they are. INVALID_ARGUMENT for bits outside
  // 2..8, held_largest outside 0..kMaxHeldLargestActivations or a held channel outside the model.
  static absl::StatusOr<std::unique_ptr<ActivationQuantizer>> Make(
      const ModelConfig& config, int bits, std::vector<HeldActivationChannel> held,
      int held_largest = 0);

  void Apply(int layer, LinearInputSite site, int64_t tokens, int64_t cols,
             float* x) const override;

 private:
  ActivationQuantizer() = default;
  int bits_ = 8;
  int held_largest_ = 0;
  // Per (layer, site): the held channels.
  std::vector<std::vector<int64_t>> held_channels_;
};

}  // namespace superweight
