#include "engine/runtime/edit_set.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "absl/strings/str_format.h"

namespace superweight {

bool operator==(const WeightEdit& a, const WeightEdit& b) {
  return std::tie(a.layer, a.kind, a.row, a.col, a.value, a.expert) ==
         std::tie(b.layer, b.kind, b.row, b.col, b.value, b.expert);
}

bool operator==(const ActivationEdit& a, const ActivationEdit& b) {
  return std::tie(a.layer, a.token, a.channel, a.value, a.expert) ==
         std::tie(b.layer, b.token, b.channel, b.value, b.expert);
}

bool operator==(const ExpertId& a, const ExpertId& b) {
  return a.layer == b.layer && a.expert == b.expert;
}

int EditSet::FirstLayer(int none) const {
  int first = none;
  for (const WeightEdit& e : weights) first = std::min(first, e.layer);
  for (const ActivationEdit& e : activations) first = std::min(first, e.layer);
  for (const ExpertId& e : pruned_experts) first = std::min(first, e.layer);
  return first;
}

namespace {

auto KeyOf(const WeightEdit& e) {
  return std::tie(e.layer, e.expert, e.kind, e.row, e.col, e.value);
}
auto KeyOf(const ActivationEdit& e) {
  return std::tie(e.layer, e.expert, e.token, e.channel, e.value);
}
auto KeyOf(const ExpertId& e) { return std::tie(e.layer, e.expert); }

// The lowest layer at which edit lists a and b differ as sets: both sorted layer first, the
// layer of the first place they part (that of the longer list's next edit where one ends).
template <typename Edit>
int FirstDifferentLayer(std::vector<Edit> a, std::vector<Edit> b, int none) {
  auto less = [](const Edit& x, const Edit& y) { return KeyOf(x) < KeyOf(y); };
  std::sort(a.begin(), a.end(), less);
  std::sort(b.begin(), b.end(), less);
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && KeyOf(a[i]) == KeyOf(b[i])) ++i;
  if (i < n) return std::min(a[i].layer, b[i].layer);
  if (i < a.size()) return a[i].layer;
  if (i < b.size()) return b[i].layer;
  return none;
}

}  // namespace

int EditSet::FirstLayerDifferentFrom(const EditSet& other, int none) const {
  return std::min({FirstDifferentLayer(weights, other.weights, none),
                   FirstDifferentLayer(activations, other.activations, none),
                   FirstDifferentLayer(pruned_experts, other.pruned_experts, none)});
}

absl::Status EditSet::Validate(const Model& model) const {
  const int layers = model.config.layers;
  for (const WeightEdit& e : weights) {
    if (e.layer < 0 || e.layer >= layers) {
      return absl::InvalidArgumentError(
          absl::StrFormat("weight edit: layer %d out of range [0, %d)", e.layer, layers));
    }
    if (!std::isfinite(e.value)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("weight edit: %s[%d, %d] of layer %d: value %f is not finite",
                          LinearKindName(e.kind), e.row, e.col, e.layer, e.value));
    }
    if (e.expert >= 0 && model.config.experts == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "weight edit: expert %d of layer %d: the model is not a mixture of experts", e.expert,
          e.layer));
    }
    const Matrix* m = model.layers[e.layer].Find(e.kind, e.expert);
    if (m == nullptr && e.expert < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "weight edit: layer %d has no %s of its own: name an expert (LAYER:EXPERT,ROW,COL)",
          e.layer, LinearKindName(e.kind)));
    }
    if (m == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("weight edit: expert %d outside layer %d's %d experts", e.expert, e.layer,
                          model.config.experts));
    }
    const std::string expert =
        e.expert >= 0 ? absl::StrFormat(", expert %d", e.expert) : std::string();
    if (e.row < 0 || e.row >= m->rows || e.col < 0 || e.col >= m->cols) {
      return absl::InvalidArgumentError(
          absl::StrFormat("weight edit: %s[%d, %d] of layer %d%s out of range [%d, %d]",
                          LinearKindName(e.kind), e.row, e.col, e.layer, expert, m->rows, m->cols));
    }
  }
  for (const ExpertId& e : pruned_experts) {
    if (model.config.experts == 0) {
      return absl::InvalidArgumentError("expert pruning: the model is not a mixture of experts");
    }
    if (e.layer < 0 || e.layer >= layers || e.expert < 0 || e.expert >= model.config.experts) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "expert pruning: expert %d of layer %d out of range (the model has %d layers of %d "
          "experts)",
          e.expert, e.layer, layers, model.config.experts));
    }
  }
  for (const ActivationEdit& e : activations) {
    if (e.expert >= 0 && e.expert >= model.config.experts) {
      return absl::InvalidArgumentError(
          absl::StrFormat("activation edit: expert %d out of range", e.expert));
    }
  }
  for (const ActivationEdit& e : activations) {
    if (e.layer < 0 || e.layer >= layers || e.channel < 0 || e.channel >= model.config.hidden ||
        e.token < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("activation edit: layer %d, token %d, channel %d out of range", e.layer,
                          e.token, e.channel));
    }
    if (!std::isfinite(e.value)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("activation edit: layer %d, token %d, channel %d: value %f is not finite",
                          e.layer, e.token, e.channel, e.value));
    }
  }
  // Each edit is a correction added to the pass: a coordinate given twice would be applied
  // twice (zeroing w twice leaves -w).
  std::vector<std::tuple<int, int, int, int64_t, int64_t>> weight_keys;
  weight_keys.reserve(weights.size());
  for (const WeightEdit& e : weights) {
    weight_keys.emplace_back(e.layer, e.expert, static_cast<int>(e.kind), e.row, e.col);
  }
  std::sort(weight_keys.begin(), weight_keys.end());
  if (auto d = std::adjacent_find(weight_keys.begin(), weight_keys.end()); d != weight_keys.end()) {
    const auto& [layer, expert, kind, row, col] = *d;
    return absl::InvalidArgumentError(
        absl::StrFormat("weight edit: %s[%d, %d] of layer %d%s is given more than once",
                        LinearKindName(static_cast<LinearKind>(kind)), row, col, layer,
                        expert >= 0 ? absl::StrFormat(", expert %d", expert) : ""));
  }
  std::vector<std::tuple<int, int, int, int>> activation_keys;
  activation_keys.reserve(activations.size());
  for (const ActivationEdit& e : activations) {
    activation_keys.emplace_back(e.layer, e.expert, e.token, e.channel);
  }
  std::sort(activation_keys.begin(), activation_keys.end());
  if (auto d = std::adjacent_find(activation_keys.begin(), activation_keys.end());
      d != activation_keys.end()) {
    const auto& [layer, expert, token, channel] = *d;
    return absl::InvalidArgumentError(absl::StrFormat(
        "activation edit: layer %d%s, token %d, channel %d is given more than once", layer,
        expert >= 0 ? absl::StrFormat(", expert %d", expert) : "", token, channel));
  }
  return absl::OkStatus();
}

}  // namespace superweight
