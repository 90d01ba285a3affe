// Ablate: the paper's ablations as one table (engine/analysis/ablate.h), on the super weights the
// request names or, by default, those Locate confirms first.
#include "engine/analysis/ablate.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

// Locate's share of the job's progress, when it runs first.
constexpr double kLocateShare = 0.05;

class AblateJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "ablate"; }

  absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const override {
    JobWork& w = *run.work;
    AblateOptions& options = w.ablate;
    options.harness.cancelled = run.cancelled;
    if (w.locate_super_weights) {
      w.locate.cancelled = run.cancelled;
      w.locate.on_progress = [&run](double p) { run.set_progress(kLocateShare * p); };
      auto located = Locate(*w.model, w.tokens, w.locate);
      if (!located.ok()) return located.status();
      for (const SuperWeight& s : located->candidates) {
        if (s.confirmed) options.super_weights.push_back({s.layer, s.row, s.col});
      }
      if (options.super_weights.empty()) {
        return absl::FailedPreconditionError(
            "Locate confirmed no super weight in this model; name the ones to ablate with "
            "super_weights (--super_weights=LAYER,ROW,COL)");
      }
    }
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
    result->set_super_weights_source(w.locate_super_weights ? "locate" : "request");
    for (const SuperWeightCoordinate& c : options.super_weights) {
      v1::Coordinate* p = result->add_super_weights();
      p->set_layer(c.layer);
      p->set_row(c.row);
      p->set_col(c.col);
    }
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
