// "Did this quantization keep the super weights?": a quantized model against its reference, the
// reference's super weights' values and super activations in both, and perplexity of both on the
// same text, with a verdict a CI pipeline can act on.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/ablate.h"  // SuperWeightCoordinate
#include "engine/analysis/harness.h"

namespace superweight {

struct CheckOptions {
  std::vector<SuperWeightCoordinate> super_weights;  // the reference's (Locate's confirmed)
  std::vector<int32_t> prompt;  // where the super activations are read (the paper's prompt)
  std::vector<int32_t> text;    // perplexity text, the same tokens for both models
  int window = 512;
  int max_windows = 16;
  // A super weight survives when |model - reference| / |reference| is at most this (a GGML
  // quantizer stores a block's largest weight almost exactly: Q4_0's error there is the f16
  // scale's, ~1e-3) and its super activation keeps at least min_activation_ratio of its size.
  double max_relative_error = 0.05;
  double min_activation_ratio = 0.5;
  double max_perplexity_ratio = 1.1;  // model / reference
  HarnessOptions harness;
};

struct SuperWeightCheck {
  SuperWeightCoordinate coordinate;
  float reference_value = 0, model_value = 0;
  double relative_error = 0;
  float reference_activation = 0, model_activation = 0;
  bool kept = false;
};

struct CheckResult {
  std::vector<SuperWeightCheck> super_weights;
  double reference_perplexity = 0, model_perplexity = 0, perplexity_ratio = 0;
  bool passed = false;
  std::vector<std::string> failures;  // one line each, empty when passed
};

// FAILED_PRECONDITION when the two models' shapes differ; INVALID_ARGUMENT for bad bounds or
// coordinates.
// FAILED_PRECONDITION naming the first difference where model cannot be a quantization of
// reference (another architecture or shape): what a check settles before any work.
absl::Status CheckComparable(const Model& model, const Model& reference);

absl::StatusOr<CheckResult> CheckQuantization(const Model& model, const Model& reference,
                                              const CheckOptions& options);

}  // namespace superweight
