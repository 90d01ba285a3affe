// The paper's weight quantization as one job: every setting (bits, block size, clipping, the
// super weights restored or not) a row of the same harness as Ablate's, each a view of the
// model whose linear weights carry a fake-quantization transform (quant/rtn.h), never a copy.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/ablate.h"  // SuperWeightCoordinate
#include "engine/analysis/harness.h"
#include "engine/quant/activation_quant.h"
#include "engine/quant/rtn.h"

namespace superweight {

struct QuantizeSetting {
  bool full_precision = false;  // the weights as stored
  RtnSpec spec;
  bool restore_super_weights = false;  // put the super weights back after quantizing
  // Mixture of experts: every matrix of an expert that holds a super weight left as stored.
  bool keep_super_experts = false;
  // Every layer's linear inputs fake-quantized (activation_quant.h) at this many bits; 0: none.
  int activation_bits = 0;
  // The super activations held out of the activations' quantization.
  bool hold_out_super_activations = false;
  // Each activation tensor's this many largest magnitudes held out, wherever they are.
  int hold_out_largest_activations = 0;
  // "FP", "INT4 b65536", "INT4 b65536 z=9 +SW", "A8", "INT8 row A8 SA held out", "A8 top-2 held
  // out"
  std::string Name() const;
  bool IsBaseline() const { return full_precision && activation_bits == 0; }
  absl::Status Validate() const;
};

// The paper's grid: FP first, then INT4 at blocks tensor-wide, 1048576, 262144, 65536, 16384,
// each plain RTN and super-weight-aware (clipped at z = 9, super weights restored).
std::vector<QuantizeSetting> DefaultQuantizeSettings();

// The paper's activation experiment: FP, INT8 activations plain and with the super activations
// held out, then the same with INT8 weights per row (W8A8).
std::vector<QuantizeSetting> ActivationQuantizeSettings();

// Where the super activations of `super_weights` meet linear layers: the super weight's input
// channel in its own layer's down input (the activation it multiplies), and its output channel
// (the residual stream's massive activation) in the normed inputs of every later layer.
std::vector<HeldActivationChannel> SuperActivationChannels(
    const ModelConfig& config, const std::vector<SuperWeightCoordinate>& super_weights);

// A model view with every linear weight of the layers (and the lm_head, where asked and not
// tied) fake-quantized, the super weights kept where the setting restores them; it shares the
// source model's mappings and must not outlive it.
struct FakeQuantizedModel {
  std::unique_ptr<Model> model;
  std::vector<std::unique_ptr<RtnTensor>> tensors;
  std::unique_ptr<ActivationQuantizer> activations;  // model->activation_transform
  double weight_mse = 0;                             // over every quantized element
  int64_t elements = 0;
};
// keep_experts: experts whose every matrix stays as stored (a mixture of experts' super experts).
absl::StatusOr<FakeQuantizedModel> FakeQuantizeModel(
    const Model& model, const RtnSpec& spec, const std::vector<SuperWeightCoordinate>& keep,
    bool quantize_lm_head, const std::atomic<bool>* cancelled = nullptr,
    const std::vector<ExpertId>& keep_experts = {});

// The experts the super weights are in (each once), for keep_super_experts.
std::vector<ExpertId> ExpertsOf(const std::vector<SuperWeightCoordinate>& super_weights);

// The model a setting evaluates: its weights fake-quantized (FakeQuantizeModel) unless kept at
// full precision, its activations quantized where the setting says; for the baseline, a view
// equal to the model.
absl::StatusOr<FakeQuantizedModel> QuantizeSettingView(
    const Model& model, const QuantizeSetting& setting,
    const std::vector<SuperWeightCoordinate>& super_weights, bool quantize_lm_head,
    const std::atomic<bool>* cancelled = nullptr);

// The same view with the spec's clipping alone (no rounding), the super weights kept: the values
// an export hands to a GGML quantizer.
absl::StatusOr<FakeQuantizedModel> ClipLinearWeights(
    const Model& model, const RtnSpec& spec, const std::vector<SuperWeightCoordinate>& keep,
    bool lm_head, const std::atomic<bool>* cancelled = nullptr,
    const std::vector<ExpertId>& keep_experts = {});

// Per super weight: |value in `quantized` - value in `stored`| / |stored| (where stored is 0, the
// absolute error |quantized|: a zero kept is no error, anything else is).
std::vector<double> SuperWeightRelativeErrors(
    const Model& stored, const Model& quantized,
    const std::vector<SuperWeightCoordinate>& super_weights);

struct QuantizeTableRow {
  std::string name;  // the setting's Name(), or what an export row is
  QuantizeSetting setting;
  Evaluation evaluation;
  double weight_mse = 0;  // -1: not measured
  // Per super weight: |quantized - stored| / |stored| (0 where restored).
  std::vector<double> super_weight_relative_error;
};

struct QuantizeOptions {
  std::vector<SuperWeightCoordinate> super_weights;
  std::vector<QuantizeSetting> settings;
  bool quantize_lm_head = false;
  EvaluationPlan plan;
  HarnessOptions harness;  // precision, batching, cancellation
  std::function<void(double, const std::string&)> on_progress;
};

// INVALID_ARGUMENT for a bad setting or super weight, before any work.
absl::StatusOr<std::vector<QuantizeTableRow>> Quantize(const Model& model,
                                                       const QuantizeOptions& options);

}  // namespace superweight
