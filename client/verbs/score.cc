// score: the perplexity of the input, with down_proj weights zeroed (--zero) or set (--set).
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "client/common.h"
#include "client/job.h"
#include "client/verb.h"

namespace superweight::client {
namespace score {  // one per verb: verbs compile together

Exit Run(const VerbContext& context) {
  v1::ScoreRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  if (absl::Status in = FillInput(req.mutable_input()); !in.ok()) {
    return Usage(std::string(in.message()));
  }
  for (const std::string& z : context.repeated->zero) {
    v1::WeightEdit* e = req.mutable_edits()->add_weights();
    if (!ParseCoordinate(z, e->mutable_coordinate()))
      return Usage("--zero wants LAYER[:EXPERT],ROW,COL");
    e->set_value(0.f);
  }
  for (const std::string& edit : context.repeated->set) {
    // The value is the server's to judge (it refuses what is not finite).
    const size_t comma = edit.rfind(',');
    float value = 0;
    v1::WeightEdit* e = req.mutable_edits()->add_weights();
    if (comma == std::string::npos ||
        !ParseCoordinate(edit.substr(0, comma), e->mutable_coordinate()) ||
        !absl::SimpleAtof(edit.substr(comma + 1), &value)) {
      return Usage("--set wants LAYER[:EXPERT],ROW,COL,VALUE");
    }
    e->set_value(value);
  }
  req.set_precision(PrecisionFlag());
  req.set_window(absl::GetFlag(FLAGS_window));
  req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
  v1::ScoreResponse resp;
  if (std::optional<Exit> done = RunJob(context, &Stub::Score, req, resp, &v1::Job::score)) {
    return *done;
  }
  if (context.json) {
    PrintJson(resp);
  } else {
    std::cout << absl::StrFormat("job %s: perplexity %.6g over %d tokens (mean NLL %.6g)\n",
                                 resp.job_id(), resp.result().perplexity(),
                                 resp.result().tokens_scored(), resp.result().mean_nll());
  }
  return kDone;
}

absl::Status CheckFlags(const std::set<std::string>& given) {
  if (given.count("max_windows") && absl::GetFlag(FLAGS_window) == 0) {
    return absl::InvalidArgumentError(
        "--max_windows needs --window: without it the input is scored as one sequence");
  }
  return absl::OkStatus();
}

}  // namespace score

Verb ScoreVerb() {
  return {"score",
          "perplexity of the input, with weights zeroed or set",
          {"zero", "set"},
          score::CheckFlags,
          score::Run};
}

}  // namespace superweight::client
