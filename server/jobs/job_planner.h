// Planning a job: its request checked against the server's limits and its models, and turned
// into the work its kind runs. A submit plans to answer the caller (INVALID_ARGUMENT and the
// like, nothing queued); a replica that claims a stored job plans it again from its request.
// Each kind's Plan sits in its own file beside its run (locate_job.cc, ...).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/analysis/locate.h"
#include "engine/model/model.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "server/evaluation_inputs.h"
#include "server/jobs/job_work.h"
#include "server/model_registry.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::server {

// What planning reads of the server.
struct PlanContext {
  ModelRegistry* registry = nullptr;
  int max_tokens = 8192;  // per request (Score's windows may read more: max_text_tokens)
  int max_text_tokens = 1 << 20;
  std::string confirm_text;  // Locate's default confirmation text
  std::string export_root;   // where Quantize writes exports (empty: refused)
  std::string model_root;    // to name exports the registry can open
  // Shared with the jobs that read it (they may outlive the service at shutdown).
  std::shared_ptr<EvaluationInputs> inputs;

  // RESOURCE_EXHAUSTED where a window (one pass) is over max_tokens.
  absl::Status CheckWindow(int window) const;
  // Locate's confirmation by effect on `text` (tokenized; nothing where the model has no
  // tokenizer or the text is empty).
  absl::Status SetConfirmation(const Model& model, const std::string& text,
                               LocateOptions* options) const;
  // The harness's inputs a request names (default: wikitext2 and every zero-shot task), checked
  // without reading them (EvaluationInputs reads them when the job runs); window 0 means 512.
  absl::StatusOr<EvaluationRequest> CheckEvaluation(
      const Model& model, const google::protobuf::RepeatedPtrField<std::string>& tasks,
      int max_examples, int window, int max_windows) const;
  // The request's super weights, checked against the model; none named: the work is set to
  // run Locate first (on the paper's prompt, confirmed on the server's text).
  absl::Status SuperWeightsOrLocate(const Model& model,
                                    const google::protobuf::RepeatedPtrField<v1::Coordinate>& named,
                                    Precision precision, JobWork* work,
                                    std::vector<SuperWeightCoordinate>* super_weights) const;
};

// Each defined in its kind's file.
absl::StatusOr<JobWork> PlanLocate(const PlanContext& context, const v1::LocateRequest& req);
absl::StatusOr<JobWork> PlanScore(const PlanContext& context, const v1::ScoreRequest& req);
absl::StatusOr<JobWork> PlanAblate(const PlanContext& context, const v1::AblateRequest& req);
absl::StatusOr<JobWork> PlanQuantize(const PlanContext& context, const v1::QuantizeRequest& req);
absl::StatusOr<JobWork> PlanCheck(const PlanContext& context, const v1::CheckRequest& req);
absl::StatusOr<JobWork> PlanRecipe(const PlanContext& context, const v1::RecipeRequest& req);

// What Check measures, planned for work->reference (Check's and Recipe's): WikiText-2's windows
// (window 0: 512; max_windows 0: 16), loaded when the job runs, the paper's prompt, the
// precision, and the named super weights or Locate first.
absl::Status PlanCheckMeasures(const PlanContext& context, int window, int max_windows,
                               v1::Precision precision,
                               const google::protobuf::RepeatedPtrField<v1::Coordinate>& named,
                               JobWork* work, std::vector<SuperWeightCoordinate>* super_weights);

// A stored request (serialized) parsed as `Request` and planned; INVALID_ARGUMENT where the
// bytes are not one.
template <typename Request>
absl::StatusOr<JobWork> PlanStored(const PlanContext& context, const std::string& bytes,
                                   absl::StatusOr<JobWork> (*plan)(const PlanContext&,
                                                                   const Request&)) {
  Request req;
  if (!req.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the stored request is not a ", Request::descriptor()->name()));
  }
  return plan(context, req);
}

// What identifies the model files a job's work reads (its model, and Check's reference),
// wherever they are read: each file's name, size and a hash of its first 64 KiB and of samples
// across it (cheap next to a job).
std::string ModelIdentity(const JobWork& work);
// FAILED_PRECONDITION naming the files where the work's models are not what `identity` recorded
// (empty: nothing recorded).
absl::Status CheckModelIdentity(const JobWork& work, const std::string& identity);

}  // namespace superweight::server
