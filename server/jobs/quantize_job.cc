// Quantize: the paper's weight quantization grid as one table (engine/analysis/quantize.h), on
// the super weights the request names or, by default, those Locate confirms first.
#include "engine/analysis/quantize.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

class QuantizeJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "quantize"; }

  absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const override {
    JobWork& w = *run.work;
    QuantizeOptions& options = w.quantize;
    options.harness.cancelled = run.cancelled;
    if (absl::Status s = LocateSuperWeightsFirst(run, &options.super_weights); !s.ok()) return s;
    const double base = w.locate_super_weights ? kLocateShare : 0.0;
    options.on_progress = [&run, base](double p, const std::string&) {
      run.set_progress(base + (1 - base) * p);
    };
    metrics->RecordBatch(1, 0);
    auto rows = Quantize(*w.model, options);
    if (!rows.ok()) return rows.status();
    v1::Job job;
    v1::QuantizeResult* result = job.mutable_quantize();
    *result = ToProto(*rows);
    RecordSuperWeights(w, options.super_weights, result);
    return job;
  }
};

}  // namespace

const JobKind& QuantizeJobKind() {
  static const QuantizeJob kind;
  return kind;
}

}  // namespace superweight::server
