// A job kind as a unit of its own: how its requests are planned, how its jobs run on the worker
// and what result each leaves. One file per kind (locate_job.cc, score_job.cc, ...), registered
// in job_kinds.cc; the stores know none of them by name, and a kind nobody registered is refused.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/convert.h"
#include "server/jobs/job_planner.h"
#include "server/jobs/job_work.h"
#include "server/metrics.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::server {

// One job of a batch as its kind sees it.
struct JobRun {
  JobWork* work = nullptr;
  const std::atomic<bool>* cancelled = nullptr;
  std::function<void(double)> set_progress;  // fraction done, 0..1
  // Asked just before the job's result is published (Quantize's export): not OK where the job
  // may no longer publish (a shared store's claim that no longer holds). Null: it may.
  std::function<absl::Status()> may_publish;
};

class JobKind {
 public:
  virtual ~JobKind() = default;
  virtual absl::string_view name() const = 0;
  // The work of a stored request (serialized, of this kind's request message), planned again
  // where the job is claimed.
  virtual absl::StatusOr<JobWork> Plan(const PlanContext& context,
                                       const std::string& request) const = 0;
  // Whether a queued job may join `first` in one run, the batch holding `batch_tokens` tokens so
  // far. Default: never.
  virtual bool Joins(const JobWork& first, const JobWork& next, size_t batch_tokens) const {
    return false;
  }
  // A job whose work parts can share: a shared store fans it out across replicas as jobs of
  // their own. The parts' requests (serialized, of this kind), in order; fewer than two: the job
  // runs whole. `work` is the job as planned from `request`.
  virtual std::vector<std::string> Split(const std::string& request, const JobWork& work) const {
    return {};
  }
  // The job's result from its parts' requests and results, in Split's order: what the job run
  // whole gives.
  virtual absl::StatusOr<v1::Job> Assemble(const std::vector<std::string>& part_requests,
                                           const std::vector<v1::Job>& part_results) const {
    return absl::UnimplementedError("this job kind is not split into parts");
  }
  // Whether any job of this kind may join another (Joins can say yes): a shared store then
  // claims queued jobs of the kind and model with the first.
  virtual bool Batches() const { return false; }
  // Runs the batch; per job, a Job holding only its result (merged into the stored record) or
  // why it did not succeed (CANCELLED ends it cancelled).
  virtual std::vector<absl::StatusOr<v1::Job>> Run(absl::Span<const JobRun> batch,
                                                   Metrics* metrics) const = 0;
  // A job's last step, once it succeeded, was not cancelled and its models are unchanged: what
  // it wrote aside is published (Quantize's export). Not OK fails the job, and Discard follows.
  virtual absl::Status Publish(JobWork& work) const { return absl::OkStatus(); }
  // What a job that did not succeed wrote aside is removed; nothing of it stays published.
  virtual void Discard(JobWork& work) const {}
};

// A kind whose jobs run one at a time.
class SingleJobKind : public JobKind {
 public:
  std::vector<absl::StatusOr<v1::Job>> Run(absl::Span<const JobRun> batch,
                                           Metrics* metrics) const final {
    std::vector<absl::StatusOr<v1::Job>> results;
    for (const JobRun& run : batch) results.push_back(RunOne(run, metrics));
    return results;
  }

 protected:
  virtual absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const = 0;
};

// The registered kinds, and the one of a name (or null).
const std::vector<const JobKind*>& JobKinds();
const JobKind* FindJobKind(absl::string_view name);

// The kinds, each defined in its own file.
const JobKind& LocateJobKind();
const JobKind& ScoreJobKind();
const JobKind& AblateJobKind();
const JobKind& QuantizeJobKind();
const JobKind& CheckJobKind();
const JobKind& RecipeJobKind();

// Locate's share of the progress of a job that runs it first.
constexpr double kLocateShare = 0.05;

// For kinds that default to a model's super weights: where the work asks for it
// (locate_super_weights), Locate's confirmed ones in `model` appended to `super_weights`
// (progress up to kLocateShare); FAILED_PRECONDITION when it confirms none and `required`.
absl::Status LocateSuperWeightsFirst(const JobRun& run, const Model& model,
                                     std::vector<SuperWeightCoordinate>* super_weights,
                                     bool required = true);
// Whether the parts of a fanned-out job ablated or held the same super weights, in the same
// order: parts that located different ones computed different things.
bool SameSuperWeights(const google::protobuf::RepeatedPtrField<v1::Coordinate>& a,
                      const google::protobuf::RepeatedPtrField<v1::Coordinate>& b);
// The result's record of the super weights used and where they came from.
template <typename Result>
void RecordSuperWeights(const JobWork& work, const std::vector<SuperWeightCoordinate>& used,
                        Result* result) {
  result->set_super_weights_source(used.empty()                ? "none"
                                   : work.locate_super_weights ? "locate"
                                                               : "request");
  for (const SuperWeightCoordinate& c : used) ToProto(c, result->add_super_weights());
}

}  // namespace superweight::server
