// Score: per-token log-probabilities of one sequence (queued single sequences of one model and
// precision share a forward pass, each with its own edit set), or perplexity over windows.
#include <cmath>

#include "engine/analysis/score.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

// Sequences of at most this many tokens in all go into one batched pass.
constexpr size_t kMaxBatchTokens = 4096;

class ScoreJob : public JobKind {
 public:
  absl::string_view name() const override { return "score"; }

  absl::StatusOr<JobWork> Plan(const PlanContext& context,
                               const std::string& request) const override {
    return PlanStored(context, request, &PlanScore);
  }

  bool Batches() const override { return true; }
  bool Joins(const JobWork& first, const JobWork& next, size_t batch_tokens) const override {
    return first.window == 0 && next.window == 0 && next.model == first.model &&
           next.precision == first.precision &&
           batch_tokens + next.tokens.size() <= kMaxBatchTokens;
  }

  std::vector<absl::StatusOr<v1::Job>> Run(absl::Span<const JobRun> batch,
                                           Metrics* metrics) const override {
    if (batch[0].work->window > 0) return {Perplexity(batch[0], metrics)};
    return Sequences(batch, metrics);
  }

 private:
  // Perplexity over windows: a job of its own.
  static absl::StatusOr<v1::Job> Perplexity(const JobRun& run, Metrics* metrics) {
    const JobWork& w = *run.work;
    PerplexityOptions po;
    po.window = w.window;
    po.max_windows = w.max_windows;
    po.precision = w.precision;
    po.edits = w.edits.empty() ? nullptr : &w.edits;
    po.cancelled = run.cancelled;
    po.on_progress = run.set_progress;
    auto r = superweight::Perplexity(*w.model, w.tokens, po);
    if (!r.ok()) return r.status();
    metrics->RecordBatch(1, r->tokens_scored + r->windows);
    v1::Job job;
    v1::ScoreResult* s = job.mutable_score();
    s->set_perplexity(r->perplexity);
    s->set_mean_nll(r->mean_nll);
    s->set_tokens_scored(r->tokens_scored);
    s->set_windows(r->windows);
    return job;
  }

  // One forward pass for every sequence; each carries its own edit set. A cancelled job is left
  // out of the pass; if all are, the pass is skipped.
  static std::vector<absl::StatusOr<v1::Job>> Sequences(absl::Span<const JobRun> batch,
                                                        Metrics* metrics) {
    std::vector<absl::StatusOr<v1::Job>> results(batch.size(), v1::Job());
    std::vector<size_t> live;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].cancelled->load()) {
        results[i] = absl::CancelledError("cancelled");
      } else {
        live.push_back(i);
      }
    }
    if (live.empty()) return results;
    std::vector<SequenceInput> inputs;
    int64_t tokens = 0;
    for (size_t i : live) {
      const JobWork& w = *batch[i].work;
      inputs.push_back({w.tokens, w.edits.empty() ? nullptr : &w.edits});
      tokens += static_cast<int64_t>(w.tokens.size());
    }
    // Cancelling any one job of the batch does not stop the others: the flag passed is the
    // first's only when it is alone.
    const JobWork& first = *batch[live[0]].work;
    auto r = TokenLogprobs(*first.model, inputs, first.precision,
                           live.size() == 1 ? batch[live[0]].cancelled : nullptr);
    metrics->RecordBatch(static_cast<int>(live.size()), tokens);
    for (size_t j = 0; j < live.size(); ++j) {
      if (!r.ok()) {
        results[live[j]] = r.status();
        continue;
      }
      const std::vector<float>& lp = (*r)[j];
      double nll = 0;
      for (float v : lp) nll -= v;
      v1::ScoreResult* s = results[live[j]]->mutable_score();
      s->mutable_logprobs()->Add(lp.begin(), lp.end());
      s->set_tokens_scored(static_cast<int64_t>(lp.size()));
      if (!lp.empty()) {
        s->set_mean_nll(nll / lp.size());
        s->set_perplexity(std::exp(nll / lp.size()));
      }
    }
    return results;
  }
};

}  // namespace

const JobKind& ScoreJobKind() {
  static const ScoreJob kind;
  return kind;
}

absl::StatusOr<JobWork> PlanScore(const PlanContext& context, const v1::ScoreRequest& req) {
  auto model = context.registry->Get(req.model());
  if (!model.ok()) return model.status();
  if (req.window() < 0 || req.max_windows() < 0 || req.window() == 1) {
    return absl::InvalidArgumentError("window must be 0 (one sequence) or at least 2");
  }
  if (absl::Status s = context.CheckWindow(req.window()); !s.ok()) return s;
  JobWork work;
  work.model = *model;
  const int limit = req.window() > 0 ? context.max_text_tokens : context.max_tokens;
  auto tokens = TokensFromInput(req.input(), **model, limit, "");
  if (!tokens.ok()) return tokens.status();
  if (req.window() == 0 && tokens->size() < 2) {
    return absl::InvalidArgumentError("scoring needs at least two tokens");
  }
  work.tokens = std::move(*tokens);
  auto edits = FromProto(req.edits(), **model);
  if (!edits.ok()) return edits.status();
  work.edits = std::move(*edits);
  work.precision = FromProto(req.precision());
  work.window = req.window();
  work.max_windows = req.max_windows();
  return work;
}

}  // namespace superweight::server
