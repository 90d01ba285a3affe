// The paper's ablations as one job: every setting a row of the same harness (WikiText-2
// perplexity and the zero-shot tasks), each setting an edit set applied in the forward pass,
// never a copy of the weights.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/harness.h"

namespace superweight {

struct SuperWeightCoordinate {
  int layer = 0;
  int64_t row = 0;  // down_proj.weight[row, col], the Hugging Face layout
  int64_t col = 0;
  int expert = -1;  // a routed expert's down_proj; -1: the layer's own (dense or shared)

  // "layers[L].mlp.down_proj.weight[R, C]", "layers[L].mlp.experts[E].down_proj.weight[R, C]".
  std::string Name() const;
};

// The down_proj a coordinate names; nullptr where the model has none (a layer, or an expert,
// it does not have).
const Matrix* DownProjOf(const Model& model, const SuperWeightCoordinate& coordinate);

// INVALID_ARGUMENT naming the first coordinate outside its layer's down_proj, or one given
// twice.
absl::Status CheckSuperWeights(const Model& model,
                               const std::vector<SuperWeightCoordinate>& super_weights);

// Per super weight, the super activation on one sequence: its layer's down_proj output at
// channel `row` with the largest magnitude over the tokens (signed).
absl::StatusOr<std::vector<float>> SuperActivations(
    const Model& model, absl::Span<const int32_t> tokens,
    const std::vector<SuperWeightCoordinate>& super_weights, Precision precision);

enum class AblationKind {
  kIntact,                        // the model as stored
  kPruneSuperWeights,             // the super weights set to 0
  kScaleSuperWeights,             // each super weight times `scale`
  kPruneOutliers,                 // the largest other weights of every linear layer set to 0
  kPruneOutliersAndSuperWeights,  // the same with the super weights at 0 too
  kRestoreSuperActivation,        // super weights at 0, the super activation written back
  kPruneExpert,                   // one expert removed from its layer's routing
};

struct AblationSetting {
  AblationKind kind = AblationKind::kIntact;
  float scale = 1.f;     // kScaleSuperWeights
  ExpertId expert = {};  // kPruneExpert
  std::string Name() const;
  // Settings that edit the model identically share one key, and one evaluation: scaling the
  // super weights by 1 is the intact model, by 0 is pruning them.
  std::string ModelKey() const;
};

// The table's settings for the names a request gives: "prune", "scale" (one row per scale),
// "outliers" (both outlier rows), "restore_sa", "prune_experts" (one row per expert of
// `experts`); intact always first. INVALID_ARGUMENT names an unknown one, and prune_experts
// without experts. ("token_probs" is not a row; the caller handles it.)
absl::StatusOr<std::vector<AblationSetting>> AblationSettings(
    const std::vector<std::string>& names, const std::vector<float>& scales,
    const std::vector<ExpertId>& experts = {});

// The largest outlier fraction OutlierEdits takes: 100 times the paper's 1e-6, so that the edits
// every pass carries stay small (a 7B model: 700,000 edits, 22 MB) and finding them costs one
// read of the weights.
inline constexpr double kMaxOutlierFraction = 1e-4;

// The weight edits of every linear weight of the layers (q, k, v, o, gate, up, down) whose
// magnitude is in the top `fraction` of its tensor (at least one per tensor), leaving out the
// super weights' own coordinates. INVALID_ARGUMENT for a fraction outside (0,
// kMaxOutlierFraction]; CANCELLED once `cancelled` is set (checked between tensors).
absl::StatusOr<std::vector<WeightEdit>> OutlierEdits(const Model& model, double fraction,
                                                     const std::vector<SuperWeightCoordinate>& keep,
                                                     const std::atomic<bool>* cancelled = nullptr);

// The per-sequence edits of a setting (outliers: OutlierEdits' result). Restoring the super
// activation watches each super weight's layer on the batch's intact pass (the harness's, shared
// with the other settings below that layer; its own where called without one) to find, per
// sequence and super weight, the token of the largest |down_proj output[:, row]| and its value,
// then writes it back with the super weights at 0. INVALID_ARGUMENT for coordinates outside the
// model.
absl::StatusOr<BatchEdits> AblationEdits(const Model& model, const AblationSetting& setting,
                                         const std::vector<SuperWeightCoordinate>& super_weights,
                                         const std::vector<WeightEdit>& outliers,
                                         Precision precision);

struct AblationRow {
  AblationSetting setting;
  std::vector<TaskScore> tasks;      // in the order asked
  double wikitext2_perplexity = -1;  // -1 when not asked
  double average_acc = -1;           // over the zero-shot tasks run; -1 when none
  int64_t outliers_pruned = 0;       // outlier settings: weights set to 0
};

// Words that are no single token of the vocabulary (with or without a leading space) are left
// out.
struct TokenProbability {
  std::string token;  // as written: "the", ".", ...
  int32_t id = -1;
  double intact = 0, pruned = 0;  // mean probability as the next token
};

struct AblateOptions {
  std::vector<SuperWeightCoordinate> super_weights;
  std::vector<AblationSetting> settings;  // AblationSettings()
  EvaluationPlan plan;                    // every setting's tasks and perplexity
  double outlier_fraction = 1e-6;
  // Token probabilities over these LAMBADA contexts (empty: none).
  std::vector<std::vector<int32_t>> token_probability_contexts;
  HarnessOptions harness;  // precision, batching, cancellation
  // Called as the job advances: fraction done and what is running ("13 settings / piqa").
  std::function<void(double, const std::string&)> on_progress;
};

struct AblateResult {
  std::vector<AblationRow> rows;
  std::vector<TokenProbability> token_probabilities;
};

absl::StatusOr<AblateResult> Ablate(const Model& model, const AblateOptions& options);

// The stopwords and punctuation whose next-token probability the paper compares.
const std::vector<std::string>& StopwordTokens();

}  // namespace superweight
