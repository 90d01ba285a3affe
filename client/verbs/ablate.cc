// ablate: zero-shot accuracy and perplexity with the super weights pruned, scaled, restored...;
// its table and its plot of accuracy against the super weights' scale.
#include <algorithm>
#include <cmath>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/common.h"
#include "client/job.h"
#include "client/plot.h"
#include "client/verb.h"

namespace superweight::client {
namespace ablate {  // one per verb: verbs compile together

void PrintAblate(const v1::AblateResponse& resp) {
  const v1::AblateResult& r = resp.result();
  PrintSuperWeights(resp.job_id(), r);
  PrintRows(r.rows());
  if (r.token_probabilities_size() > 0) {
    std::cout << absl::StrFormat("\nnext-token probability over %d LAMBADA contexts\n",
                                 r.token_prob_contexts());
    std::cout << absl::StrFormat("%-8s %12s %12s %8s\n", "token", "intact", "SW pruned", "ratio");
    for (const auto& t : r.token_probabilities()) {
      std::cout << absl::StrFormat("%-8s %12.4g %12.4g %7.2fx\n", " '" + t.token() + "' ",
                                   t.intact(), t.pruned(),
                                   t.intact() > 0 ? t.pruned() / t.intact() : 0.0);
    }
  }
}

// Average zero-shot accuracy against the super weights' scale (the scale rows and, at 1, the
// intact one), as the paper's Figure 6.
bool PlotAblation(const v1::AblateResult& r, const std::string& path) {
  Series s{"average accuracy", "#c33", {}};
  std::vector<std::pair<double, std::string>> ticks;
  for (const auto& row : r.rows()) {
    auto acc = row.metrics().find("average/acc");
    if (acc == row.metrics().end()) continue;
    double scale;
    if (row.setting() == "intact") {
      scale = 1;
    } else if (row.setting().rfind("scale SW x", 0) == 0 &&
               absl::SimpleAtod(row.setting().substr(10), &scale)) {
    } else {
      continue;
    }
    s.points.push_back({scale, acc->second});
    ticks.push_back({scale, absl::StrFormat("%.3g", scale)});
  }
  return PlotLines(path, "average zero-shot accuracy against the super weights' scale", "scale",
                   {s}, ticks);
}

Exit Run(const VerbContext& context) {
  v1::AblateRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_settings), ',', absl::SkipEmpty()))
    req.add_settings(std::string(v));
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipEmpty()))
    req.add_tasks(std::string(v));
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_scales), ',', absl::SkipEmpty())) {
    float scale;
    if (!absl::SimpleAtof(v, &scale) || !std::isfinite(scale)) {
      return Usage("--scales wants comma-separated numbers");
    }
    req.add_scales(scale);
  }
  for (const std::string& c : context.repeated->super_weights) {
    if (!ParseCoordinate(c, req.add_super_weights())) {
      return Usage("--super_weights wants LAYER[:EXPERT],ROW,COL");
    }
  }
  for (const std::string& e : context.repeated->prune_experts) {
    int32_t layer;
    std::optional<int32_t> expert;
    if (!ParseLayer(e, &layer, &expert) || !expert.has_value()) {
      return Usage("--prune_experts wants LAYER:EXPERT");
    }
    v1::ExpertRef* ref = req.add_prune_experts();
    ref->set_layer(layer);
    ref->set_expert(*expert);
  }
  req.set_max_examples(absl::GetFlag(FLAGS_max_examples));
  req.set_outlier_fraction(absl::GetFlag(FLAGS_outlier_fraction));
  req.set_token_prob_contexts(absl::GetFlag(FLAGS_token_prob_contexts));
  req.set_window(absl::GetFlag(FLAGS_window));
  req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
  req.set_precision(PrecisionFlag());
  v1::AblateResponse resp;
  if (std::optional<Exit> done = RunJob(context, &Stub::Ablate, req, resp, &v1::Job::ablate)) {
    return *done;
  }
  if (context.json) {
    PrintJson(resp);
  } else {
    PrintAblate(resp);
  }
  const std::string plot = absl::GetFlag(FLAGS_plot);
  if (!plot.empty() && !PlotAblation(resp.result(), plot)) {
    return Usage("cannot write --plot " + plot);
  }
  return kDone;
}

// The flags of one setting refused unless --settings (when given) has that setting.
absl::Status CheckFlags(const std::set<std::string>& given) {
  if (!given.count("settings")) return absl::OkStatus();
  const std::vector<std::string> settings =
      absl::StrSplit(absl::GetFlag(FLAGS_settings), ',', absl::SkipEmpty());
  for (const auto& [flag, setting] : {std::pair<const char*, const char*>{"scales", "scale"},
                                      {"outlier_fraction", "outliers"},
                                      {"token_prob_contexts", "token_probs"}}) {
    if (given.count(flag) &&
        std::find(settings.begin(), settings.end(), setting) == settings.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--%s is for the %s setting, not in --settings", flag, setting));
    }
  }
  return absl::OkStatus();
}

}  // namespace ablate

Verb AblateVerb() {
  return {"ablate",
          "zero-shot accuracy and perplexity with the super weights pruned, scaled, ...",
          {"settings", "scales", "outlier_fraction", "token_prob_contexts", "prune_experts"},
          ablate::CheckFlags,
          ablate::Run};
}

}  // namespace superweight::client
