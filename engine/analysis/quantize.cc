#include "engine/analysis/quantize.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace superweight {

std::string QuantizeSetting::Name() const {
  if (full_precision) return "FP";
  return spec.Name() + (restore_super_weights ? " +SW" : "");
}

std::vector<QuantizeSetting> DefaultQuantizeSettings() {
  std::vector<QuantizeSetting> settings = {{true, {}, false}};
  for (int64_t block :
       {kBlockTensor, int64_t{1048576}, int64_t{262144}, int64_t{65536}, int64_t{16384}}) {
    RtnSpec plain{4, block, ClipMethod::kNone, 0};
    RtnSpec clipped{4, block, ClipMethod::kZScore, DefaultClipValue(ClipMethod::kZScore)};
    settings.push_back({false, plain, false});
    settings.push_back({false, clipped, true});
  }
  return settings;
}

namespace {

// Every linear weight of the layers (and the lm_head where asked and not tied) given an
// RtnTensor: rounding, or the clipping alone.
absl::StatusOr<FakeQuantizedModel> TransformLinearWeights(
    const Model& model, const RtnSpec& spec, const std::vector<SuperWeightCoordinate>& keep,
    bool quantize_lm_head, const std::atomic<bool>* cancelled, bool round) {
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  if (absl::Status s = CheckSuperWeights(model, keep); !s.ok()) return s;
  FakeQuantizedModel q;
  q.model = model.ShareWeights();
  double squared_error = 0;
  auto quantize = [&](Matrix* w, const std::vector<KeptElement>& kept,
                      const std::string& what) -> absl::Status {
    if (cancelled != nullptr && cancelled->load()) return absl::CancelledError("cancelled");
    absl::StatusOr<std::unique_ptr<RtnTensor>> t =
        round ? RtnTensor::Make(*w, spec, kept) : RtnTensor::MakeClipOnly(*w, spec, kept);
    if (!t.ok())
      return absl::Status(t.status().code(), absl::StrCat(what, ": ", t.status().message()));
    squared_error += (*t)->squared_error();
    q.elements += (*t)->elements();
    w->transform = t->get();
    w->transform_row0 = 0;
    q.tensors.push_back(std::move(*t));
    return absl::OkStatus();
  };
  for (int l = 0; l < model.config.layers; ++l) {
    for (int k = 0; k < kNumLinearKinds; ++k) {
      const LinearKind kind = static_cast<LinearKind>(k);
      std::vector<KeptElement> kept;
      for (const SuperWeightCoordinate& sw : keep) {
        if (kind == LinearKind::kDown && sw.layer == l) kept.push_back({sw.row, sw.col});
      }
      if (absl::Status s = quantize(&q.model->layers[l].Get(kind), kept,
                                    absl::StrFormat("layers[%d].%s", l, LinearKindName(kind)));
          !s.ok()) {
        return s;
      }
    }
  }
  if (quantize_lm_head && model.lm_head.data != model.embed.data) {
    if (absl::Status s = quantize(&q.model->lm_head, {}, "lm_head"); !s.ok()) return s;
  }
  q.weight_mse = q.elements > 0 ? squared_error / static_cast<double>(q.elements) : 0;
  return q;
}

}  // namespace

absl::StatusOr<FakeQuantizedModel> FakeQuantizeModel(const Model& model, const RtnSpec& spec,
                                                     const std::vector<SuperWeightCoordinate>& keep,
                                                     bool quantize_lm_head,
                                                     const std::atomic<bool>* cancelled) {
  return TransformLinearWeights(model, spec, keep, quantize_lm_head, cancelled, /*round=*/true);
}

absl::StatusOr<FakeQuantizedModel> ClipLinearWeights(const Model& model, const RtnSpec& spec,
                                                     const std::vector<SuperWeightCoordinate>& keep,
                                                     bool lm_head,
                                                     const std::atomic<bool>* cancelled) {
  return TransformLinearWeights(model, spec, keep, lm_head, cancelled, /*round=*/false);
}

std::vector<double> SuperWeightRelativeErrors(
    const Model& stored, const Model& quantized,
    const std::vector<SuperWeightCoordinate>& super_weights) {
  std::vector<double> errors;
  for (const SuperWeightCoordinate& sw : super_weights) {
    const float a = stored.layers[sw.layer].Get(LinearKind::kDown).At(sw.row, sw.col);
    const float b = quantized.layers[sw.layer].Get(LinearKind::kDown).At(sw.row, sw.col);
    errors.push_back(a != 0 ? std::fabs(static_cast<double>(b) - a) / std::fabs(a) : 0.0);
  }
  return errors;
}

absl::StatusOr<std::vector<QuantizeTableRow>> Quantize(const Model& model,
                                                       const QuantizeOptions& options) {
  if (absl::Status s = CheckSuperWeights(model, options.super_weights); !s.ok()) return s;
  for (const QuantizeSetting& setting : options.settings) {
    if (setting.full_precision) continue;
    if (absl::Status s = setting.spec.Validate(); !s.ok()) return s;
  }
  StepProgress progress(options.harness,
                        static_cast<int>(options.settings.size()) * options.plan.steps(),
                        options.on_progress);
  std::vector<QuantizeTableRow> rows;
  for (const QuantizeSetting& setting : options.settings) {
    QuantizeTableRow row;
    row.setting = setting;
    FakeQuantizedModel quantized;
    const Model* evaluated = &model;
    if (!setting.full_precision) {
      absl::StatusOr<FakeQuantizedModel> q =
          FakeQuantizeModel(model, setting.spec,
                            setting.restore_super_weights ? options.super_weights
                                                          : std::vector<SuperWeightCoordinate>{},
                            options.quantize_lm_head, options.harness.cancelled);
      if (!q.ok()) return q.status();
      quantized = std::move(*q);
      evaluated = quantized.model.get();
      row.weight_mse = quantized.weight_mse;
    }
    row.name = setting.Name();
    row.super_weight_relative_error =
        SuperWeightRelativeErrors(model, *evaluated, options.super_weights);
    absl::StatusOr<Evaluation> evaluation =
        EvaluateModel(*evaluated, options.plan, BatchEdits(), setting.Name(), &progress);
    if (!evaluation.ok()) return evaluation.status();
    row.evaluation = std::move(*evaluation);
    rows.push_back(std::move(row));
  }
  progress.Done();
  return rows;
}

}  // namespace superweight
