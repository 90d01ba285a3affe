// Ablate: the paper's ablations as one table (engine/analysis/ablate.h), on the super weights the
// request names or, by default, those Locate confirms first.
#include <algorithm>
#include <map>

#include "absl/strings/str_format.h"
#include "engine/analysis/ablate.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

class AblateJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "ablate"; }

  absl::StatusOr<JobWork> Plan(const PlanContext& context,
                               const std::string& request) const override {
    return PlanStored(context, request, &PlanAblate);
  }

  // A part per evaluation: the rows that edit the model alike (ModelKey) go together, the
  // intact row's part first (it also takes the token probabilities).
  std::vector<std::string> Split(const std::string& request, const JobWork& work) const override {
    v1::AblateRequest req;
    const std::vector<AblationSetting>& settings = work.ablate.settings;
    if (!req.ParseFromString(request) || !req.rows().empty() || settings.size() < 2) return {};
    std::vector<std::string> keys;
    std::vector<std::vector<int>> groups;
    for (int i = 0; i < static_cast<int>(settings.size()); ++i) {
      const std::string key = settings[i].ModelKey();
      const auto at = std::find(keys.begin(), keys.end(), key);
      if (at == keys.end()) {
        keys.push_back(key);
        groups.push_back({i});
      } else {
        groups[at - keys.begin()].push_back(i);
      }
    }
    if (groups.size() < 2) return {};
    std::vector<std::string> parts;
    for (const std::vector<int>& rows : groups) {
      v1::AblateRequest part = req;
      part.clear_request_id();
      part.mutable_rows()->Add(rows.begin(), rows.end());
      parts.push_back(part.SerializeAsString());
    }
    return parts;
  }

  absl::StatusOr<v1::Job> Assemble(const std::vector<std::string>& part_requests,
                                   const std::vector<v1::Job>& part_results) const override {
    if (part_requests.empty() || part_requests.size() != part_results.size()) {
      return absl::InternalError("a fanned-out Ablate's parts do not match their results");
    }
    v1::Job whole;
    v1::AblateResult* result = whole.mutable_ablate();
    *result = part_results[0].ablate();  // the intact row's part: token probabilities and all
    result->clear_rows();
    std::map<int, v1::AblateResult::Row> rows;
    for (size_t p = 0; p < part_requests.size(); ++p) {
      v1::AblateRequest req;
      const v1::AblateResult& part = part_results[p].ablate();
      if (!req.ParseFromString(part_requests[p]) || req.rows_size() != part.rows_size()) {
        return absl::InternalError("a part of a fanned-out Ablate returned other rows than asked");
      }
      // Every part ablates the same super weights, or the parts computed different things.
      if (!SameSuperWeights(part.super_weights(), result->super_weights())) {
        return absl::InternalError(
            "the parts of a fanned-out Ablate located different super weights");
      }
      for (int k = 0; k < req.rows_size(); ++k) rows[req.rows(k)] = part.rows(k);
    }
    for (auto& [index, row] : rows) *result->add_rows() = std::move(row);
    return whole;
  }

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

absl::StatusOr<JobWork> PlanAblate(const PlanContext& context, const v1::AblateRequest& req) {
  auto model = context.registry->Get(req.model());
  if (!model.ok()) return model.status();
  const Model& m = **model;
  if (req.token_prob_contexts() < 0) {
    return absl::InvalidArgumentError("token_prob_contexts must not be negative");
  }
  if (!std::isfinite(req.outlier_fraction()) || req.outlier_fraction() < 0 ||
      req.outlier_fraction() > kMaxOutlierFraction) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "outlier_fraction must be in [0, %g] (0: the default 1e-6): each outlier is an edit the "
        "passes carry",
        kMaxOutlierFraction));
  }
  JobWork work;
  work.model = *model;
  AblateOptions& o = work.ablate;
  std::vector<std::string> settings(req.settings().begin(), req.settings().end());
  const bool pruning_rows =
      std::find(settings.begin(), settings.end(), "prune_experts") != settings.end();
  if (!req.prune_experts().empty() && !settings.empty() && !pruning_rows) {
    return absl::InvalidArgumentError(
        "prune_experts names experts, but the settings have no prune_experts rows");
  }
  if (settings.empty()) settings = {"prune", "scale", "outliers", "restore_sa", "token_probs"};
  if (!req.prune_experts().empty() && !pruning_rows) settings.push_back("prune_experts");
  std::vector<float> scales(req.scales().begin(), req.scales().end());
  if (scales.empty()) scales = {0.f, 0.2f, 0.5f, 0.8f, 1.f, 1.5f, 2.f, 3.f};
  std::vector<ExpertId> experts;
  if (!req.prune_experts().empty() && m.config.experts == 0) {
    return absl::InvalidArgumentError("prune_experts: the model is not a mixture of experts");
  }
  for (const v1::ExpertRef& e : req.prune_experts()) {
    if (e.layer() < 0 || e.layer() >= m.config.layers || e.expert() < 0 ||
        e.expert() >= m.config.experts) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prune_experts: expert %d:%d outside the model's %d layers of %d experts",
                          e.layer(), e.expert(), m.config.layers, m.config.experts));
    }
    for (const ExpertId& seen : experts) {
      if (seen.layer == e.layer() && seen.expert == e.expert()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "prune_experts: expert %d:%d is given more than once", e.layer(), e.expert()));
      }
    }
    // A layer must keep the experts a token is routed to.
    if (m.config.experts - 1 < m.config.experts_per_token) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "prune_experts: layer %d has %d experts for %d per token: none can be pruned", e.layer(),
          m.config.experts, m.config.experts_per_token));
    }
    experts.push_back({e.layer(), e.expert()});
  }
  auto parsed = AblationSettings(settings, scales, experts);
  if (!parsed.ok()) return parsed.status();
  o.settings = std::move(*parsed);
  // Pruning experts alone needs no super weight: none is located for it. Asked of the whole
  // table, so that every part of a fanned-out job ablates the same super weights.
  const bool needs_super_weights =
      std::any_of(o.settings.begin(), o.settings.end(), [](const AblationSetting& s) {
        return s.kind != AblationKind::kIntact && s.kind != AblationKind::kPruneExpert;
      });
  if (!req.rows().empty()) {
    std::vector<AblationSetting> chosen;
    for (int i = 0; i < req.rows_size(); ++i) {
      const int row = req.rows(i);
      if (row < 0 || row >= static_cast<int>(o.settings.size()) ||
          (i > 0 && row <= req.rows(i - 1))) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "rows: indices into the table's %d rows (0: intact), ascending, each once",
            o.settings.size()));
      }
      chosen.push_back(o.settings[row]);
    }
    o.settings = std::move(chosen);
  }
  // The token probabilities go with the intact row.
  const bool intact_row = req.rows().empty() || req.rows(0) == 0;
  auto evaluation =
      context.CheckEvaluation(m, req.tasks(), req.max_examples(), req.window(), req.max_windows());
  if (!evaluation.ok()) return evaluation.status();
  if (std::find(settings.begin(), settings.end(), "token_probs") != settings.end() && intact_row) {
    evaluation->token_prob_contexts =
        req.token_prob_contexts() > 0 ? req.token_prob_contexts() : 500;
  }
  // Read when the job runs: a queued job holds its request, not the data.
  work.load_inputs = [inputs = context.inputs, request = *evaluation](JobWork& w) {
    return inputs->Load(request, w.model, &w.ablate.plan, &w.ablate.token_probability_contexts);
  };
  if (req.outlier_fraction() > 0) o.outlier_fraction = req.outlier_fraction();
  o.harness.precision = FromProto(req.precision());
  if (needs_super_weights || !req.super_weights().empty()) {
    if (absl::Status s = context.SuperWeightsOrLocate(m, req.super_weights(), o.harness.precision,
                                                      &work, &o.super_weights);
        !s.ok()) {
      return s;
    }
  }
  work.precision = o.harness.precision;
  return work;
}

}  // namespace superweight::server
