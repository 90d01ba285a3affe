// The registry of job kinds: a new kind is a file of its own and a line here.
#include <algorithm>

#include "server/jobs/job_kind.h"

namespace superweight::server {

const std::vector<const JobKind*>& JobKinds() {
  static const auto* kinds =
      new std::vector<const JobKind*>{&LocateJobKind(),   &ScoreJobKind(), &AblateJobKind(),
                                      &QuantizeJobKind(), &CheckJobKind(), &RecipeJobKind()};
  return *kinds;
}

const JobKind* FindJobKind(absl::string_view name) {
  for (const JobKind* kind : JobKinds()) {
    if (kind->name() == name) return kind;
  }
  return nullptr;
}

bool SameSuperWeights(const google::protobuf::RepeatedPtrField<v1::Coordinate>& a,
                      const google::protobuf::RepeatedPtrField<v1::Coordinate>& b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](const auto& x, const auto& y) {
           return x.SerializeAsString() == y.SerializeAsString();
         });
}

absl::Status LocateSuperWeightsFirst(const JobRun& run, const Model& model,
                                     std::vector<SuperWeightCoordinate>* super_weights,
                                     bool required) {
  JobWork& w = *run.work;
  if (!w.locate_super_weights) return absl::OkStatus();
  w.locate.cancelled = run.cancelled;
  w.locate.on_progress = [&run](double p) { run.set_progress(kLocateShare * p); };
  auto located = Locate(model, w.tokens, w.locate);
  if (!located.ok()) return located.status();
  for (const SuperWeight& s : located->candidates) {
    if (s.confirmed) super_weights->push_back({s.layer, s.row, s.col, s.expert});
  }
  if (super_weights->empty() && required) {
    return absl::FailedPreconditionError(
        "Locate confirmed no super weight in this model; name them with super_weights "
        "(--super_weights=LAYER,ROW,COL)");
  }
  return absl::OkStatus();
}

}  // namespace superweight::server
