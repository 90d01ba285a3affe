// Recipe: the llama-quantize command line that keeps a model's super weights through one of its
// file types (engine/analysis/quantize_recipe.h), and what the plain file type and the recipe
// each make of the model: both written as llama-quantize would (the engine's emulation) into a
// scratch directory, opened, and checked as Check checks a quantized model.
#include <stdlib.h>

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/analysis/check.h"
#include "engine/formats/gguf_requantize.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

// A directory of the job's own under the system's temporary directory, removed with it.
class ScratchDirectory {
 public:
  static absl::StatusOr<std::unique_ptr<ScratchDirectory>> Make() {
    std::error_code error;
    std::filesystem::path base = std::filesystem::temp_directory_path(error);
    if (error) return absl::InternalError("no temporary directory: " + error.message());
    std::string pattern = (base / "superweight-recipe-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(absl::StrCat("cannot make a directory under ", base.string()));
    }
    return std::unique_ptr<ScratchDirectory>(new ScratchDirectory(pattern));
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDirectory(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

class RecipeJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "recipe"; }

  absl::StatusOr<JobWork> Plan(const PlanContext& context,
                               const std::string& request) const override {
    return PlanStored(context, request, &PlanRecipe);
  }

  absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const override {
    JobWork& w = *run.work;
    RecipeOptions& options = w.recipe;
    if (absl::Status s = LocateSuperWeightsFirst(run, *w.model, &options.super_weights); !s.ok()) {
      return s;
    }
    w.check.super_weights = options.super_weights;
    w.check.harness.cancelled = run.cancelled;
    options.cancelled = run.cancelled;
    metrics->RecordBatch(1, 0);
    auto recipe = PlanQuantizeRecipe(*w.model, options);
    if (!recipe.ok()) return recipe.status();
    auto scratch = ScratchDirectory::Make();
    if (!scratch.ok()) return scratch.status();

    v1::Job job;
    v1::RecipeResult* result = job.mutable_recipe();
    result->set_file_type(recipe->file_type.name);
    RecordSuperWeights(w, options.super_weights, result);
    for (const RecipeTensor& t : recipe->tensors) {
      v1::RecipeResult::Tensor* p = result->add_tensors();
      p->set_name(t.name);
      for (const SuperWeightCoordinate& c : t.super_weights) ToProto(c, p->add_super_weights());
      p->set_mix_type(DTypeName(t.mix_type));
      p->set_chosen_type(DTypeName(t.chosen));
      p->set_overridden(t.overridden);
      for (const TypeCandidate& c : t.candidates) {
        v1::RecipeResult::Candidate* q = p->add_candidates();
        q->set_type(DTypeName(c.requested));
        q->set_written(DTypeName(c.written));
        q->set_bits_per_weight(c.bits_per_weight);
        q->set_super_weight_relative_error(c.super_weight_relative_error);
        q->set_tensor_relative_error(c.tensor_relative_error);
      }
    }
    for (const TensorTypeOverride& o : recipe->overrides) {
      result->add_tensor_type_overrides(absl::StrCat(o.pattern, "=", DTypeName(o.type)));
    }
    result->set_command(LlamaQuantizeCommand(*recipe, w.model->path, w.recipe_output, ""));

    // The files and their checks: the locate share, then half of the rest each.
    const double base = w.locate_super_weights ? kLocateShare : 0.0;
    auto outcome = [&](const std::vector<TensorTypeOverride>& overrides, const char* name,
                       double from, v1::RecipeResult::Outcome* out) -> absl::Status {
      const std::string path = absl::StrCat((*scratch)->path(), "/", name, ".gguf");
      RequantizeOptions requantize;
      requantize.llama = LlamaQuantizeOptions();
      requantize.llama->file_type = recipe->file_type;
      requantize.llama->overrides = overrides;
      requantize.cancelled = run.cancelled;
      if (auto written = RequantizeGguf(w.model->path, path, requantize); !written.ok()) {
        return written.status();
      }
      std::error_code error;
      const uintmax_t bytes = std::filesystem::file_size(path, error);
      out->set_bytes(error ? 0 : bytes);
      auto opened = OpenModel(path);
      if (!opened.ok()) {
        return absl::InternalError(
            absl::StrCat("the ", name, " file does not open: ", opened.status().message()));
      }
      CheckOptions check = w.check;
      check.harness.on_progress = [&run, base, from](int64_t done, int64_t total) {
        run.set_progress(from + (1 - base) / 2 * done / std::max<int64_t>(1, total));
      };
      auto checked = CheckQuantization(**opened, *w.model, check);
      if (!checked.ok()) return checked.status();
      result->set_reference_perplexity(checked->reference_perplexity);
      out->set_perplexity(checked->model_perplexity);
      out->set_perplexity_ratio(checked->perplexity_ratio);
      double worst_error = 0, smallest_ratio = INFINITY;
      bool kept = true;
      for (const SuperWeightCheck& c : checked->super_weights) {
        kept &= c.kept;
        worst_error = std::max(worst_error, c.relative_error);
        if (c.reference_activation != 0) {
          smallest_ratio = std::min(smallest_ratio,
                                    std::fabs(double{c.model_activation} / c.reference_activation));
        }
      }
      out->set_super_weight_max_relative_error(worst_error);
      out->set_super_activation_min_ratio(std::isfinite(smallest_ratio) ? smallest_ratio : 0);
      out->set_passed(checked->passed);
      out->set_super_weights_kept(kept);
      for (const std::string& f : checked->failures) out->add_failures(f);
      std::filesystem::remove(path, error);
      return absl::OkStatus();
    };
    if (absl::Status s = outcome({}, "plain", base, result->mutable_plain()); !s.ok()) return s;
    if (recipe->overrides.empty()) {
      *result->mutable_recipe() = result->plain();
    } else if (absl::Status s = outcome(recipe->overrides, "recipe", base + (1 - base) / 2,
                                        result->mutable_recipe());
               !s.ok()) {
      return s;
    }
    return job;
  }
};

}  // namespace

const JobKind& RecipeJobKind() {
  static const RecipeJob kind;
  return kind;
}

absl::StatusOr<JobWork> PlanRecipe(const PlanContext& context, const v1::RecipeRequest& req) {
  auto model = context.registry->Get(req.model());
  if (!model.ok()) return model.status();
  const Model& m = **model;
  if (m.format != ModelFormat::kGguf) {
    return absl::FailedPreconditionError(
        "a recipe is for llama-quantize, which reads GGUF files: this model is not one");
  }
  if (m.tokenizer == nullptr) {
    return absl::FailedPreconditionError("the model has no tokenizer to check the files with");
  }
  for (const v1::Coordinate& c : req.super_weights()) {
    if (c.has_expert()) {
      return absl::UnimplementedError("recipes for routed experts' tensors are not built");
    }
  }
  auto file_type = FindLlamaFileType(req.file_type());
  if (!file_type.ok()) return file_type.status();
  if (!IsQuantized(file_type->default_type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("file_type ", file_type->name,
                     " is not quantized: llama-quantize applies no --tensor-type override to it"));
  }
  const double bound = req.max_super_weight_error();
  if (!std::isfinite(bound) || bound < 0 || bound >= 1) {
    return absl::InvalidArgumentError(
        "max_super_weight_error must be at least 0 and below 1 (0: the default, 0.01)");
  }
  const std::string& output = req.output();
  if (output.size() > 4096 || output.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("output: a path of up to 4096 bytes");
  }
  JobWork work;
  work.model = *model;
  work.reference = *model;
  RecipeOptions& o = work.recipe;
  o.file_type = *file_type;
  if (bound > 0) o.max_super_weight_error = bound;
  work.recipe_output = output.empty() ? absl::StrCat(std::filesystem::path(m.path).stem().string(),
                                                     ".", file_type->name, ".gguf")
                                      : output;
  if (absl::Status s = PlanCheckMeasures(context, req.window(), req.max_windows(), req.precision(),
                                         req.super_weights(), &work, &o.super_weights);
      !s.ok()) {
    return s;
  }
  return work;
}

}  // namespace superweight::server
