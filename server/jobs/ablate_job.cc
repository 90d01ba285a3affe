// Ablate: the paper's ablations as one table (engine/analysis/ablate.h), on the super weights the
// request names or, by default, those Locate confirms first.
#include "engine/analysis/ablate.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

class AblateJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "ablate"; }

  absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const override {
    JobWork& w = *run.work;
    AblateOptions& options = w.ablate;
    options.harness.cancelled = run.cancelled;
    if (absl::Status s = LocateSuperWeightsFirst(run, *w.model, &options.super_weights); !s.ok())
      return s;
    const double base = w.locate_super_weights ? kLocateShare : 0.0;
    options.on_progress = [&run, base](double p, const std::string&) {
      run.set_progress(base + (1 - base) * p);
    };
    metrics->RecordBatch(1, 0);
    auto r = Ablate(*w.model, options);
    if (!r.ok()) return r.status();
    v1::Job job;
    v1::AblateResult* result = job.mutable_ablate();
    *result = ToProto(*r);
    RecordSuperWeights(w, options.super_weights, result);
    result->set_token_prob_contexts(static_cast<int>(options.token_probability_contexts.size()));
    return job;
  }
};

}  // namespace

const JobKind& AblateJobKind() {
  static const AblateJob kind;
  return kind;
}

}  // namespace superweight::server
