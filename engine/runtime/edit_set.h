// An ablation as data: scalar weight overrides and activation overrides applied inside the
// forward pass. The mapped weights are never written; W[r, c] = v becomes a rank-1 correction
// y[:, r] += (v - W[r, c]) * x[:, c] after the matmul, so any number of concurrent edit sets
// share one copy of the model.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/model.h"

namespace superweight {

struct WeightEdit {
  int layer = 0;
  LinearKind kind = LinearKind::kDown;
  int64_t row = 0;
  int64_t col = 0;
  float value = 0.f;
  int expert = -1;  // a routed expert's gate, up or down; -1: the layer's own weight
};

// Overwrites the output of a layer's down_proj at (token, channel): the paper's "restore the
// super activation". For an expert, its output where the token is routed to it.
struct ActivationEdit {
  int layer = 0;
  int token = 0;
  int channel = 0;
  float value = 0.f;
  int expert = -1;
};

// An expert of a mixture-of-experts layer (EditSet: removed from its layer's routing, its router
// logit -inf, as the super-expert study prunes one).
struct ExpertId {
  int layer = 0;
  int expert = 0;
};

bool operator==(const WeightEdit& a, const WeightEdit& b);
bool operator==(const ActivationEdit& a, const ActivationEdit& b);
bool operator==(const ExpertId& a, const ExpertId& b);

struct EditSet {
  std::vector<WeightEdit> weights;
  std::vector<ActivationEdit> activations;
  std::vector<ExpertId> pruned_experts;

  bool empty() const { return weights.empty() && activations.empty() && pruned_experts.empty(); }
  // The lowest layer any edit touches; `none` when there are no edits. Below it the edited pass
  // is the model's own, so a pass can take it over from the unedited one (forward.h).
  int FirstLayer(int none) const;
  // The lowest layer whose edits here and in `other` differ (as sets); `none` when they are the
  // same (it does not bound a difference found). Below it the two edited passes are one
  // computation.
  int FirstLayerDifferentFrom(const EditSet& other, int none) const;
  // Checks every coordinate against the model's shapes, every value finite and no coordinate
  // given twice (INVALID_ARGUMENT naming it).
  absl::Status Validate(const Model& model) const;
};

}  // namespace superweight
