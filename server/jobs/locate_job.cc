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

  absl::StatusOr<JobWork> Plan(const PlanContext& context,
                               const std::string& request) const override {
    return PlanStored(context, request, &PlanLocate);
  }

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

absl::StatusOr<JobWork> PlanLocate(const PlanContext& context, const v1::LocateRequest& req) {
  auto model = context.registry->Get(req.model());
  if (!model.ok()) return model.status();
  JobWork work;
  work.model = *model;
  auto tokens = TokensFromInput(req.input(), **model, context.max_tokens, kPaperPrompt);
  if (!tokens.ok()) return tokens.status();
  work.tokens = std::move(*tokens);
  LocateOptions& lo = work.locate;
  // NaN passes every comparison: !(x >= 0) refuses it with the negatives.
  if (!(req.threshold() >= 0) || !(req.spike_ratio() >= 0) || req.max_iterations() < 0 ||
      !(req.confirm_ratio() >= 0) || std::isinf(req.threshold()) || std::isinf(req.spike_ratio()) ||
      std::isinf(req.confirm_ratio())) {
    return absl::InvalidArgumentError(
        "threshold, spike_ratio, max_iterations and confirm_ratio must be finite and not "
        "negative");
  }
  if (req.threshold() > 0) lo.threshold = req.threshold();
  if (req.spike_ratio() > 0) lo.spike_ratio = req.spike_ratio();
  if (req.max_iterations() > 0) lo.max_iterations = std::min(req.max_iterations(), 64);
  if (req.confirm_ratio() > 0) lo.confirm_ratio = req.confirm_ratio();
  lo.precision = FromProto(req.precision());
  const std::string& confirm =
      req.confirm_text().empty() ? context.confirm_text : req.confirm_text();
  if (!req.skip_confirmation()) {
    if (absl::Status s = context.SetConfirmation(**model, confirm, &lo); !s.ok()) return s;
  }
  work.precision = lo.precision;
  work.known_model = RecogniseModel(req.model() + " " + (*model)->name);
  return work;
}

}  // namespace superweight::server
