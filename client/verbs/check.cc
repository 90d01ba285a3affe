// check: whether quantized --model keeps the super weights of --reference (exit 3 when not).
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "client/common.h"
#include "client/job.h"
#include "client/verb.h"

namespace superweight::client {
namespace check {  // one per verb: verbs compile together

void PrintCheck(const v1::CheckRequest& req, const v1::CheckResponse& resp) {
  const v1::CheckResult& r = resp.result();
  std::cout << absl::StrFormat("job %s: %s keeps the super weights of %s (%s): %s\n", resp.job_id(),
                               req.model(), req.reference(), r.super_weights_source(),
                               r.passed() ? "yes" : "NO");
  std::cout << absl::StrFormat("%-52s %12s %12s %10s %12s %12s\n", "super weight", "reference",
                               "model", "rel error", "SA ref", "SA model");
  for (const auto& w : r.super_weights()) {
    std::cout << absl::StrFormat("%-52s %12.6g %12.6g %10.3g %12.6g %12.6g%s\n",
                                 CoordinateName(w.coordinate()), w.reference_value(),
                                 w.model_value(), w.relative_error(), w.reference_activation(),
                                 w.model_activation(), w.kept() ? "" : "  LOST");
  }
  std::cout << absl::StrFormat("WikiText-2 perplexity: reference %.6g, model %.6g (x%.4g)\n",
                               r.reference_perplexity(), r.model_perplexity(),
                               r.perplexity_ratio());
  for (const std::string& f : r.failures()) std::cout << "failed: " << f << "\n";
}

Exit Run(const VerbContext& context) {
  if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_reference).empty()) {
    return Usage("check wants --model=QUANTIZED and --reference=ORIGINAL");
  }
  v1::CheckRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  req.set_reference(absl::GetFlag(FLAGS_reference));
  for (const std::string& c : context.repeated->super_weights) {
    if (!ParseCoordinate(c, req.add_super_weights())) {
      return Usage("--super_weights wants LAYER[:EXPERT],ROW,COL");
    }
  }
  req.set_max_relative_error(absl::GetFlag(FLAGS_max_rel_error));
  req.set_min_activation_ratio(absl::GetFlag(FLAGS_min_activation_ratio));
  req.set_max_perplexity_ratio(absl::GetFlag(FLAGS_max_ppl_ratio));
  req.set_window(absl::GetFlag(FLAGS_window));
  req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
  req.set_precision(PrecisionFlag());
  v1::CheckResponse resp;
  if (std::optional<Exit> done = RunJob(context, &Stub::Check, req, resp, &v1::Job::check)) {
    return *done;
  }
  if (context.json) {
    PrintJson(resp);
  } else {
    PrintCheck(req, resp);
  }
  return resp.result().passed() ? kDone : kNotAsExpected;
}

}  // namespace check

Verb CheckVerb() {
  return {"check",
          "whether quantized --model keeps the super weights of --reference",
          {"reference", "max_ppl_ratio", "max_rel_error", "min_activation_ratio"},
          nullptr,
          check::Run};
}

}  // namespace superweight::client
