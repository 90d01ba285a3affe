// Locate: the paper's one-pass method, iterated and confirmed (engine/analysis/locate.h), its
// candidates matched against the published coordinates.
#include "engine/analysis/locate.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"
#include "server/known_directory.h"

namespace superweight::server {
namespace {

class LocateJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "locate"; }

  absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const override {
    JobWork& w = *run.work;
    w.locate.cancelled = run.cancelled;
    w.locate.on_progress = run.set_progress;
    metrics->RecordBatch(1, static_cast<int64_t>(w.tokens.size()));
    auto r = Locate(*w.model, w.tokens, w.locate);
    if (!r.ok()) return r.status();
    v1::Job job;
    v1::LocateResult* result = job.mutable_locate();
    *result = ToProto(*r);
    result->mutable_token_ids()->Add(w.tokens.begin(), w.tokens.end());
    result->set_known_model(w.known_model);
    for (auto& sw : *result->mutable_super_weights()) {
      for (const auto& k : KnownSuperWeights()) {
        if (k.model == w.known_model && !sw.coordinate().has_expert() &&
            k.layer == sw.coordinate().layer() && k.row == sw.coordinate().row() &&
            k.col == sw.coordinate().col()) {
          sw.set_known_match(k.model);
        }
      }
    }
    result->set_summary(LocateSummary(*r));
    return job;
  }
};

}  // namespace

const JobKind& LocateJobKind() {
  static const LocateJob kind;
  return kind;
}

}  // namespace superweight::server
