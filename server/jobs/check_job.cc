// Check: did a quantized model keep its reference's super weights (engine/analysis/check.h)? On
// the super weights the request names or, by default, those Locate confirms in the reference.
#include "engine/analysis/check.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

class CheckJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "check"; }

  absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const override {
    JobWork& w = *run.work;
    CheckOptions& options = w.check;
    options.harness.cancelled = run.cancelled;
    if (absl::Status s = LocateSuperWeightsFirst(run, *w.reference, &options.super_weights);
        !s.ok()) {
      return s;
    }
    const double base = w.locate_super_weights ? kLocateShare : 0.0;
    options.harness.on_progress = [&run, base](int64_t done, int64_t total) {
      run.set_progress(base + (1 - base) * static_cast<double>(done) / std::max<int64_t>(1, total));
    };
    metrics->RecordBatch(1, 0);
    auto r = CheckQuantization(*w.model, *w.reference, options);
    if (!r.ok()) return r.status();
    v1::Job job;
    v1::CheckResult* result = job.mutable_check();
    for (const SuperWeightCheck& c : r->super_weights) {
      v1::CheckResult::SuperWeight* p = result->add_super_weights();
      ToProto(c.coordinate, p->mutable_coordinate());
      p->set_reference_value(c.reference_value);
      p->set_model_value(c.model_value);
      p->set_relative_error(c.relative_error);
      p->set_reference_activation(c.reference_activation);
      p->set_model_activation(c.model_activation);
      p->set_kept(c.kept);
    }
    result->set_super_weights_source(w.locate_super_weights ? "locate" : "request");
    result->set_reference_perplexity(r->reference_perplexity);
    result->set_model_perplexity(r->model_perplexity);
    result->set_perplexity_ratio(r->perplexity_ratio);
    result->set_passed(r->passed);
    for (const std::string& f : r->failures) result->add_failures(f);
    return job;
  }
};

}  // namespace

const JobKind& CheckJobKind() {
  static const CheckJob kind;
  return kind;
}

}  // namespace superweight::server
