#include "engine/analysis/check.h"

#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/analysis/quantize.h"

namespace superweight {

absl::Status CheckComparable(const Model& model, const Model& reference) {
  const ModelConfig &a = model.config, &b = reference.config;
  if (a.arch != b.arch) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the model (%s) and its reference (%s) differ in architecture: not a quantization of it",
        ArchitectureName(a.arch), ArchitectureName(b.arch)));
  }
  const std::pair<const char*, std::pair<int64_t, int64_t>> sizes[] = {
      {"layers", {a.layers, b.layers}},
      {"hidden", {a.hidden, b.hidden}},
      {"intermediate", {a.intermediate, b.intermediate}},
      {"vocab", {a.vocab, b.vocab}},
      {"heads", {a.heads, b.heads}},
      {"kv_heads", {a.kv_heads, b.kv_heads}}};
  for (const auto& [what, pair] : sizes) {
    if (pair.first != pair.second) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the model and its reference differ in shape (%s %d against %d): not a quantization of "
          "it",
          what, pair.first, pair.second));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckResult> CheckQuantization(const Model& model, const Model& reference,
                                              const CheckOptions& options) {
  if (absl::Status s = CheckComparable(model, reference); !s.ok()) return s;
  for (double bound :
       {options.max_relative_error, options.min_activation_ratio, options.max_perplexity_ratio}) {
    if (!std::isfinite(bound) || bound < 0) {
      return absl::InvalidArgumentError("bounds must be finite and not negative");
    }
  }
  if (options.super_weights.empty()) {
    return absl::InvalidArgumentError("no super weights to check");
  }
  auto reference_activations =
      SuperActivations(reference, options.prompt, options.super_weights, options.harness.precision);
  if (!reference_activations.ok()) return reference_activations.status();
  auto model_activations =
      SuperActivations(model, options.prompt, options.super_weights, options.harness.precision);
  if (!model_activations.ok()) return model_activations.status();

  const std::vector<double> relative_errors =
      SuperWeightRelativeErrors(reference, model, options.super_weights);
  CheckResult result;
  for (size_t i = 0; i < options.super_weights.size(); ++i) {
    const SuperWeightCoordinate& c = options.super_weights[i];
    SuperWeightCheck check;
    check.coordinate = c;
    check.reference_value = DownProjOf(reference, c)->At(c.row, c.col);
    check.model_value = DownProjOf(model, c)->At(c.row, c.col);
    check.relative_error = relative_errors[i];
    check.reference_activation = (*reference_activations)[i];
    check.model_activation = (*model_activations)[i];
    const bool value_kept = check.relative_error <= options.max_relative_error;
    const bool activation_kept =
        std::fabs(check.model_activation) >=
        options.min_activation_ratio * std::fabs(check.reference_activation);
    check.kept = value_kept && activation_kept;
    const std::string where = c.Name();
    if (!value_kept) {
      result.failures.push_back(
          absl::StrFormat("%s is %.6g, the reference's %.6g: relative error %.3g above %.3g", where,
                          check.model_value, check.reference_value, check.relative_error,
                          options.max_relative_error));
    }
    if (!activation_kept) {
      result.failures.push_back(absl::StrFormat(
          "%s's super activation is %.6g, the reference's %.6g: below %.3g of it", where,
          check.model_activation, check.reference_activation, options.min_activation_ratio));
    }
    result.super_weights.push_back(check);
  }
  HarnessOptions h = options.harness;
  auto reference_ppl =
      WindowedPerplexity(reference, options.text, options.window, options.max_windows, h);
  if (!reference_ppl.ok()) return reference_ppl.status();
  auto model_ppl = WindowedPerplexity(model, options.text, options.window, options.max_windows, h);
  if (!model_ppl.ok()) return model_ppl.status();
  result.reference_perplexity = *reference_ppl;
  result.model_perplexity = *model_ppl;
  result.perplexity_ratio = *model_ppl / *reference_ppl;
  if (!(result.perplexity_ratio <= options.max_perplexity_ratio)) {
    result.failures.push_back(absl::StrFormat(
        "WikiText-2 perplexity %.6g against the reference's %.6g: ratio %.4g above %.4g",
        result.model_perplexity, result.reference_perplexity, result.perplexity_ratio,
        options.max_perplexity_ratio));
  }
  result.passed = result.failures.empty();
  return result;
}

}  // namespace superweight
