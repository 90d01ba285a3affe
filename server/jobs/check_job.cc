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

  absl::StatusOr<JobWork> Plan(const PlanContext& context,
                               const std::string& request) const override {
    return PlanStored(context, request, &PlanCheck);
  }

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

absl::StatusOr<JobWork> PlanCheck(const PlanContext& context, const v1::CheckRequest& req) {
  auto model = context.registry->Get(req.model());
  if (!model.ok()) return model.status();
  auto reference = context.registry->Get(req.reference());
  if (!reference.ok()) return reference.status();
  const Model& ref = **reference;
  if (absl::Status s = CheckComparable(**model, ref); !s.ok()) return s;
  for (double bound :
       {req.max_relative_error(), req.min_activation_ratio(), req.max_perplexity_ratio()}) {
    if (!std::isfinite(bound) || bound < 0) {
      return absl::InvalidArgumentError(
          "max_relative_error, min_activation_ratio and max_perplexity_ratio must be finite and "
          "not negative (0: the default)");
    }
  }
  JobWork work;
  work.model = *model;
  work.reference = *reference;
  CheckOptions& o = work.check;
  if (req.max_relative_error() > 0) o.max_relative_error = req.max_relative_error();
  if (req.min_activation_ratio() > 0) o.min_activation_ratio = req.min_activation_ratio();
  if (req.max_perplexity_ratio() > 0) o.max_perplexity_ratio = req.max_perplexity_ratio();
  if (absl::Status s = PlanCheckMeasures(context, req.window(), req.max_windows(), req.precision(),
                                         req.super_weights(), &work, &o.super_weights);
      !s.ok()) {
    return s;
  }
  return work;
}

absl::Status PlanCheckMeasures(const PlanContext& context, int window, int max_windows,
                               v1::Precision precision,
                               const google::protobuf::RepeatedPtrField<v1::Coordinate>& named,
                               JobWork* work, std::vector<SuperWeightCoordinate>* super_weights) {
  const Model& ref = *work->reference;
  CheckOptions& o = work->check;
  google::protobuf::RepeatedPtrField<std::string> wikitext;
  wikitext.Add("wikitext2");
  auto evaluation =
      context.CheckEvaluation(ref, wikitext, 0, window, max_windows > 0 ? max_windows : 16);
  if (!evaluation.ok()) return evaluation.status();
  o.window = evaluation->window;
  o.max_windows = evaluation->max_windows;
  work->load_inputs = [inputs = context.inputs, request = *evaluation](JobWork& w) {
    EvaluationPlan plan;
    if (absl::Status s = inputs->Load(request, w.reference, &plan); !s.ok()) return s;
    w.check.text = std::move(plan.wikitext2);
    return absl::OkStatus();
  };
  o.prompt = ref.tokenizer->Encode(kPaperPrompt, ref.config.add_bos);
  o.harness.precision = FromProto(precision);
  work->precision = o.harness.precision;
  return context.SuperWeightsOrLocate(ref, named, o.harness.precision, work, super_weights);
}

}  // namespace superweight::server
