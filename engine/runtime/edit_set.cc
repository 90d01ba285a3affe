#include "engine/runtime/edit_set.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace superweight {

int EditSet::FirstLayer(int none) const {
  int first = none;
  for (const WeightEdit& e : weights) first = std::min(first, e.layer);
  for (const ActivationEdit& e : activations) first = std::min(first, e.layer);
  return first;
}

absl::Status EditSet::Validate(const Model& model) const {
  const int layers = model.config.layers;
  for (const WeightEdit& e : weights) {
    if (e.layer < 0 || e.layer >= layers) {
      return absl::InvalidArgumentError(
          absl::StrFormat("weight edit: layer %d out of range [0, %d)", e.layer, layers));
    }
    const Matrix& m = model.layers[e.layer].Get(e.kind);
    if (e.row < 0 || e.row >= m.rows || e.col < 0 || e.col >= m.cols) {
      return absl::InvalidArgumentError(
          absl::StrFormat("weight edit: %s[%d, %d] of layer %d out of range [%d, %d]",
                          LinearKindName(e.kind), e.row, e.col, e.layer, m.rows, m.cols));
    }
  }
  for (const ActivationEdit& e : activations) {
    if (e.layer < 0 || e.layer >= layers || e.channel < 0 || e.channel >= model.config.hidden ||
        e.token < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("activation edit: layer %d, token %d, channel %d out of range", e.layer,
                          e.token, e.channel));
    }
  }
  return absl::OkStatus();
}

}  // namespace superweight
