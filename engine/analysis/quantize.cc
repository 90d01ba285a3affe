#include "engine/analysis/quantize.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace superweight {

std::string QuantizeSetting::Name() const {
  std::string name;
  if (!full_precision) {
    name = spec.Name() + (restore_super_weights ? " +SW" : "") + (keep_super_experts ? " +SE" : "");
  } else if (activation_bits == 0) {
    name = "FP";
  }
  if (activation_bits > 0) {
    absl::StrAppend(&name, name.empty() ? "" : " ", "A", activation_bits);
    if (hold_out_super_activations && hold_out_largest_activations > 0) {
      absl::StrAppend(&name, " SA and top-", hold_out_largest_activations, " held out");
    } else if (hold_out_super_activations) {
      absl::StrAppend(&name, " SA held out");
    } else if (hold_out_largest_activations > 0) {
      absl::StrAppend(&name, " top-", hold_out_largest_activations, " held out");
    }
  }
  return name;
}

absl::Status QuantizeSetting::Validate() const {
  if (!full_precision) {
    if (absl::Status s = spec.Validate(); !s.ok()) return s;
  }
  if (keep_super_experts && full_precision) {
    return absl::InvalidArgumentError("keep_super_experts needs quantized weights");
  }
  if (activation_bits != 0 && (activation_bits < 2 || activation_bits > 8)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "activation bits %d outside 2..8 (0: activations at full precision)", activation_bits));
  }
  if (hold_out_super_activations && activation_bits == 0) {
    return absl::InvalidArgumentError(
        "hold_out_super_activations needs quantized activations (activation_bits)");
  }
  if (hold_out_largest_activations != 0 && activation_bits == 0) {
    return absl::InvalidArgumentError(
        "hold_out_largest_activations needs quantized activations (activation_bits)");
  }
  if (hold_out_largest_activations < 0 ||
      hold_out_largest_activations > kMaxHeldLargestActivations) {
    return absl::InvalidArgumentError(
        absl::StrFormat("hold_out_largest_activations %d outside 0..%d",
                        hold_out_largest_activations, kMaxHeldLargestActivations));
  }
  return absl::OkStatus();
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

std::vector<QuantizeSetting> ActivationQuantizeSettings() {
  const RtnSpec int8_rows{8, kBlockRow, ClipMethod::kNone, 0};
  std::vector<QuantizeSetting> settings;
  for (bool weights_full_precision : {true, false}) {
    if (weights_full_precision) settings.push_back({true, {}, false});
    for (bool hold : {false, true}) {
      QuantizeSetting s{weights_full_precision, weights_full_precision ? RtnSpec{} : int8_rows,
                        false};
      s.activation_bits = 8;
      s.hold_out_super_activations = hold;
      settings.push_back(s);
    }
  }
  return settings;
}

std::vector<HeldActivationChannel> SuperActivationChannels(
    const ModelConfig& config, const std::vector<SuperWeightCoordinate>& super_weights) {
  std::vector<HeldActivationChannel> held;
  for (const SuperWeightCoordinate& sw : super_weights) {
    held.push_back({sw.layer, LinearInputSite::kDown, sw.col});
    for (int l = sw.layer + 1; l < config.layers; ++l) {
      held.push_back({l, LinearInputSite::kQkv, sw.row});
      held.push_back({l, LinearInputSite::kGateUp, sw.row});
    }
  }
  return held;
}

namespace {

// Every linear weight of the layers (and the lm_head where asked and not tied) given an
// RtnTensor: rounding, or the clipping alone.
absl::StatusOr<FakeQuantizedModel> TransformLinearWeights(
    const Model& model, const RtnSpec& spec, const std::vector<SuperWeightCoordinate>& keep,
    bool quantize_lm_head, const std::atomic<bool>* cancelled, bool round,
    const std::vector<ExpertId>& keep_experts) {
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
  // Every linear weight: the layer's own (none of a mixture of experts without a shared
  // expert) and each expert's; the router stays as stored, as llama-quantize keeps it.
  for (int l = 0; l < model.config.layers; ++l) {
    LayerWeights& layer = q.model->layers[l];
    for (int expert = -1; expert < static_cast<int>(layer.experts.size()); ++expert) {
      const bool kept_expert =
          std::any_of(keep_experts.begin(), keep_experts.end(),
                      [&](const ExpertId& e) { return e.layer == l && e.expert == expert; });
      if (kept_expert) continue;
      for (int k = 0; k < kNumLinearKinds; ++k) {
        const LinearKind kind = static_cast<LinearKind>(k);
        Matrix* w = layer.Find(kind, expert);
        if (w == nullptr) continue;
        std::vector<KeptElement> kept;
        for (const SuperWeightCoordinate& sw : keep) {
          if (kind == LinearKind::kDown && sw.layer == l && sw.expert == expert) {
            kept.push_back({sw.row, sw.col});
          }
        }
        const std::string what =
            expert < 0
                ? absl::StrFormat("layers[%d].%s", l, LinearKindName(kind))
                : absl::StrFormat("layers[%d].experts[%d].%s", l, expert, LinearKindName(kind));
        if (absl::Status s = quantize(w, kept, what); !s.ok()) return s;
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
                                                     const std::atomic<bool>* cancelled,
                                                     const std::vector<ExpertId>& keep_experts) {
  return TransformLinearWeights(model, spec, keep, quantize_lm_head, cancelled, /*round=*/true,
                                keep_experts);
}

absl::StatusOr<FakeQuantizedModel> ClipLinearWeights(const Model& model, const RtnSpec& spec,
                                                     const std::vector<SuperWeightCoordinate>& keep,
                                                     bool lm_head,
                                                     const std::atomic<bool>* cancelled,
                                                     const std::vector<ExpertId>& keep_experts) {
  return TransformLinearWeights(model, spec, keep, lm_head, cancelled, /*round=*/false,
                                keep_experts);
}

std::vector<ExpertId> ExpertsOf(const std::vector<SuperWeightCoordinate>& super_weights) {
  std::vector<ExpertId> experts;
  for (const SuperWeightCoordinate& sw : super_weights) {
    const bool seen = std::any_of(experts.begin(), experts.end(), [&](const ExpertId& e) {
      return e.layer == sw.layer && e.expert == sw.expert;
    });
    if (sw.expert >= 0 && !seen) experts.push_back({sw.layer, sw.expert});
  }
  return experts;
}

absl::StatusOr<FakeQuantizedModel> QuantizeSettingView(
    const Model& model, const QuantizeSetting& setting,
    const std::vector<SuperWeightCoordinate>& super_weights, bool quantize_lm_head,
    const std::atomic<bool>* cancelled) {
  if (absl::Status s = setting.Validate(); !s.ok()) return s;
  FakeQuantizedModel view;
  if (setting.full_precision) {
    view.model = model.ShareWeights();
  } else {
    absl::StatusOr<FakeQuantizedModel> q = FakeQuantizeModel(
        model, setting.spec,
        setting.restore_super_weights ? super_weights : std::vector<SuperWeightCoordinate>{},
        quantize_lm_head, cancelled,
        setting.keep_super_experts ? ExpertsOf(super_weights) : std::vector<ExpertId>{});
    if (!q.ok()) return q.status();
    view = std::move(*q);
  }
  if (setting.activation_bits > 0) {
    if (setting.hold_out_super_activations && super_weights.empty()) {
      return absl::InvalidArgumentError("no super weights whose activations to hold out");
    }
    if (absl::Status s = CheckSuperWeights(model, super_weights); !s.ok()) return s;
    absl::StatusOr<std::unique_ptr<ActivationQuantizer>> activations = ActivationQuantizer::Make(
        model.config, setting.activation_bits,
        setting.hold_out_super_activations ? SuperActivationChannels(model.config, super_weights)
                                           : std::vector<HeldActivationChannel>{},
        setting.hold_out_largest_activations);
    if (!activations.ok()) return activations.status();
    view.activations = std::move(*activations);
    view.model->activation_transform = view.activations.get();
  }
  return view;
}

std::vector<double> SuperWeightRelativeErrors(
    const Model& stored, const Model& quantized,
    const std::vector<SuperWeightCoordinate>& super_weights) {
  std::vector<double> errors;
  for (const SuperWeightCoordinate& sw : super_weights) {
    const float a = DownProjOf(stored, sw)->At(sw.row, sw.col);
    const float b = DownProjOf(quantized, sw)->At(sw.row, sw.col);
    errors.push_back(a != 0 ? std::fabs(static_cast<double>(b) - a) / std::fabs(a) : std::fabs(b));
  }
  return errors;
}

absl::StatusOr<std::vector<QuantizeTableRow>> Quantize(const Model& model,
                                                       const QuantizeOptions& options) {
  if (absl::Status s = CheckSuperWeights(model, options.super_weights); !s.ok()) return s;
  for (const QuantizeSetting& setting : options.settings) {
    if (absl::Status s = setting.Validate(); !s.ok()) return s;
    if (setting.hold_out_super_activations && options.super_weights.empty()) {
      return absl::InvalidArgumentError("no super weights whose activations to hold out");
    }
    if (setting.keep_super_experts && model.config.experts == 0) {
      return absl::InvalidArgumentError(
          "keep_super_experts: the model is not a mixture of experts");
    }
    if (setting.keep_super_experts && ExpertsOf(options.super_weights).empty()) {
      return absl::InvalidArgumentError(
          "keep_super_experts: no super weight is in a routed expert (LAYER:EXPERT,ROW,COL)");
    }
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
    if (!setting.IsBaseline()) {
      absl::StatusOr<FakeQuantizedModel> q =
          QuantizeSettingView(model, setting, options.super_weights, options.quantize_lm_head,
                              options.harness.cancelled);
      if (!q.ok()) return q.status();
      quantized = std::move(*q);
      evaluated = quantized.model.get();
      row.weight_mse = setting.full_precision ? 0 : quantized.weight_mse;
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
