// Quantize: the paper's weight quantization grid as one table (engine/analysis/quantize.h), on
// the super weights the request names or, by default, those Locate confirms first; optionally the
// one quantized setting exported under --export_root (a GGUF file, evaluated as a row of its own,
// or a Hugging Face directory of the setting's values).
#include <openssl/evp.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/analysis/quantize.h"
#include "engine/export/export_gguf.h"
#include "engine/export/export_hf.h"
#include "engine/formats/quantize_ggml.h"
#include "engine/util/publish.h"
#include "engine/util/utf8_prefix.h"
#include "server/convert.h"
#include "server/jobs/job_kind.h"

namespace superweight::server {
namespace {

// The request's table: the baseline (FP) and its settings, or the default grid.
absl::StatusOr<std::vector<QuantizeSetting>> QuantizeTableOf(const v1::QuantizeRequest& req) {
  if (req.settings().empty()) return DefaultQuantizeSettings();
  std::vector<QuantizeSetting> settings = {QuantizeSetting{true, {}, false}};  // the baseline
  for (int i = 0; i < req.settings_size(); ++i) {
    auto setting = FromProto(req.settings(i));
    if (!setting.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("settings[", i, "]: ", setting.status().message()));
    }
    if (!setting->IsBaseline()) settings.push_back(*setting);
  }
  return settings;
}

// The export's share of the progress, when there is one.
constexpr double kExportShare = 0.15;

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::InternalError(absl::StrCat("cannot read back ", path));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buffer(1 << 20);
  while (f) {
    f.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    EVP_DigestUpdate(ctx, buffer.data(), static_cast<size_t>(f.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx, digest, &length);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

// A llama.cpp file type named so that no GGML type has the name (Q4_K_M, Q3_K_S, Q3_K_L...).
bool IsMixOwnName(const std::string& name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  return absl::EndsWith(upper, "_S") || absl::EndsWith(upper, "_M") || absl::EndsWith(upper, "_L");
}

// Writes the request's one quantized setting as a GGUF file, then evaluates the file as the
// server would open it: the row tells what the exported model does.
absl::StatusOr<QuantizeTableRow> ExportGgufAndEvaluate(const JobWork& w,
                                                       const QuantizeSetting& setting,
                                                       const std::atomic<bool>* cancelled,
                                                       StepProgress* progress,
                                                       v1::ExportedModel* exported) {
  const JobWork::Export& e = w.quantize_export;
  const QuantizeOptions& o = w.quantize;
  const std::vector<SuperWeightCoordinate> kept =
      setting.restore_super_weights ? o.super_weights : std::vector<SuperWeightCoordinate>{};
  absl::StatusOr<FakeQuantizedModel> clipped = ClipLinearWeights(
      *w.model, setting.spec, kept, /*lm_head=*/false, cancelled,
      setting.keep_super_experts ? ExpertsOf(o.super_weights) : std::vector<ExpertId>{});
  if (!clipped.ok()) return clipped.status();
  GgufExportOptions options;
  options.type = e.type;
  options.llama_file_type = e.llama_file_type;
  options.super_weight_tensor_type = e.super_weight_tensor_type;
  options.super_weights = kept;
  if (setting.keep_super_experts) options.super_experts = ExpertsOf(o.super_weights);
  options.setting = setting.Name();
  options.cancelled = cancelled;
  auto summary = ExportGguf(*w.model, *clipped->model, options, e.staged);
  if (!summary.ok()) return summary.status();
  auto sha = Sha256OfFile(e.staged);
  if (!sha.ok()) return sha.status();
  const std::string type_name = !e.llama_file_type.has_value() ? DTypeName(e.type)
                                : IsMixOwnName(e.llama_file_type->name)
                                    ? e.llama_file_type->name
                                    : absl::StrCat("mix:", e.llama_file_type->name);
  exported->set_format(absl::StrCat("gguf:", type_name));
  exported->set_path(e.relative_path);
  exported->set_model(e.model);
  exported->set_bytes(summary->bytes);
  exported->set_sha256(*sha);

  auto opened = OpenModel(e.staged);
  if (!opened.ok()) {
    return absl::InternalError(
        absl::StrCat("the export does not open again: ", opened.status().message()));
  }
  QuantizeTableRow row;
  row.setting = setting;
  row.name = absl::StrCat("export ", type_name);
  if (!kept.empty() || !options.super_experts.empty()) {
    absl::StrAppend(&row.name, kept.empty() ? "" : " +SW",
                    options.super_experts.empty() ? "" : " +SE", " ",
                    DTypeName(e.super_weight_tensor_type));
  }
  row.weight_mse = -1;
  row.super_weight_relative_error = SuperWeightRelativeErrors(*w.model, **opened, o.super_weights);
  auto evaluation = EvaluateModel(**opened, o.plan, BatchEdits(), row.name, progress);
  if (!evaluation.ok()) return evaluation.status();
  row.evaluation = std::move(*evaluation);
  return row;
}

// Writes the setting's fake-quantized values as a Hugging Face directory: the same model as the
// setting's row, so it needs no row of its own.
absl::Status ExportHf(const JobWork& w, const QuantizeSetting& setting,
                      const std::atomic<bool>* cancelled, v1::ExportedModel* exported) {
  const JobWork::Export& e = w.quantize_export;
  const std::vector<SuperWeightCoordinate> kept = setting.restore_super_weights
                                                      ? w.quantize.super_weights
                                                      : std::vector<SuperWeightCoordinate>{};
  absl::StatusOr<FakeQuantizedModel> view = FakeQuantizeModel(
      *w.model, setting.spec, kept, w.quantize.quantize_lm_head, cancelled,
      setting.keep_super_experts ? ExpertsOf(w.quantize.super_weights) : std::vector<ExpertId>{});
  if (!view.ok()) return view.status();
  if (absl::Status s = ExportHuggingFace(*view->model, e.staged, e.type, cancelled); !s.ok()) {
    return s;
  }
  const std::string weights = e.staged + "/model.safetensors";
  auto sha = Sha256OfFile(weights);
  if (!sha.ok()) return sha.status();
  struct stat st;
  exported->set_format(e.type == DType::kF32 ? "hf:f32" : "hf:bf16");
  exported->set_path(e.relative_path);
  exported->set_model(e.model);
  exported->set_bytes(::stat(weights.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0);
  exported->set_sha256(*sha);
  return absl::OkStatus();
}

// With no super weight (none confirmed, none named), the settings that need one (restoring it,
// holding out its activation) cannot mean what they say: left out of the default grid, or
// refused by name where the request asked for them.
absl::Status LeaveOutSettingsNeedingSuperWeights(JobWork& w, std::vector<std::string>* skipped) {
  std::vector<QuantizeSetting> kept;
  for (const QuantizeSetting& s : w.quantize.settings) {
    if (s.restore_super_weights || s.hold_out_super_activations || s.keep_super_experts) {
      skipped->push_back(s.Name());
    } else {
      kept.push_back(s);
    }
  }
  if (!skipped->empty() && w.quantize_settings_named) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no super weight confirmed in this model (none named): ", absl::StrJoin(*skipped, ", "),
        " need one; name them with super_weights, or leave those settings out"));
  }
  w.quantize.settings = std::move(kept);
  return absl::OkStatus();
}

// The caller knows exports by their names under --export_root: messages say those, not the
// server's paths.
absl::Status RelativeToExportRoot(const absl::Status& status, const JobWork::Export& e) {
  if (status.ok() || e.format.empty()) return status;
  const std::string root = e.path.substr(0, e.path.size() - e.relative_path.size());
  return absl::Status(status.code(), absl::StrReplaceAll(status.message(),
                                                         {{root, ""}, {e.path, e.relative_path}}));
}

class QuantizeJob : public SingleJobKind {
 public:
  absl::string_view name() const override { return "quantize"; }

  absl::StatusOr<JobWork> Plan(const PlanContext& context,
                               const std::string& request) const override {
    return PlanStored(context, request, &PlanQuantize);
  }

  // A part per row (each quantizes and evaluates the model its own way); an export is one job.
  std::vector<std::string> Split(const std::string& request, const JobWork& work) const override {
    v1::QuantizeRequest req;
    if (!req.ParseFromString(request) || !req.rows().empty() || !req.export_format().empty() ||
        work.quantize.settings.size() < 2) {
      return {};
    }
    std::vector<std::string> parts;
    for (size_t row = 0; row < work.quantize.settings.size(); ++row) {
      v1::QuantizeRequest part = req;
      part.clear_request_id();
      part.add_rows(static_cast<int>(row));
      parts.push_back(part.SerializeAsString());
    }
    return parts;
  }

  // The rows in the table's order, found by their setting's name (a part whose setting needs a
  // super weight that Locate did not confirm returns none, and names it skipped).
  absl::StatusOr<v1::Job> Assemble(const std::vector<std::string>& part_requests,
                                   const std::vector<v1::Job>& part_results) const override {
    v1::QuantizeRequest whole_request;
    if (part_requests.empty() || part_requests.size() != part_results.size() ||
        !whole_request.ParseFromString(part_requests[0])) {
      return absl::InternalError("a fanned-out Quantize's parts do not match their results");
    }
    auto table = QuantizeTableOf(whole_request);
    if (!table.ok()) return table.status();
    v1::Job whole;
    v1::QuantizeResult* result = whole.mutable_quantize();
    *result = part_results[0].quantize();
    result->clear_rows();
    result->clear_skipped_settings();
    std::map<std::string, const v1::QuantizeResult::Row*> rows;
    std::set<std::string> skipped;
    for (const v1::Job& part : part_results) {
      if (!SameSuperWeights(part.quantize().super_weights(), result->super_weights())) {
        return absl::InternalError(
            "the parts of a fanned-out Quantize located different super weights");
      }
      for (const auto& row : part.quantize().rows()) rows[row.setting()] = &row;
      for (const std::string& name : part.quantize().skipped_settings()) skipped.insert(name);
    }
    for (const QuantizeSetting& setting : *table) {
      const std::string name = setting.Name();
      if (auto it = rows.find(name); it != rows.end()) *result->add_rows() = *it->second;
      if (skipped.count(name) != 0) result->add_skipped_settings(name);
    }
    return whole;
  }

  absl::StatusOr<v1::Job> RunOne(const JobRun& run, Metrics* metrics) const override {
    absl::StatusOr<v1::Job> job = RunQuantize(run, metrics);
    if (!job.ok()) return RelativeToExportRoot(job.status(), run.work->quantize_export);
    return job;
  }

 private:
  absl::StatusOr<v1::Job> RunQuantize(const JobRun& run, Metrics* metrics) const {
    JobWork& w = *run.work;
    QuantizeOptions& options = w.quantize;
    options.harness.cancelled = run.cancelled;
    if (absl::Status s = LocateSuperWeightsFirst(run, *w.model, &options.super_weights,
                                                 /*required=*/false);
        !s.ok()) {
      return s;
    }
    std::vector<std::string> skipped;
    if (options.super_weights.empty()) {
      if (absl::Status s = LeaveOutSettingsNeedingSuperWeights(w, &skipped); !s.ok()) return s;
    }
    const double base = w.locate_super_weights ? kLocateShare : 0.0;
    const bool exporting = !w.quantize_export.format.empty();
    const double table_share = (1 - base) * (exporting ? 1 - kExportShare : 1);
    options.on_progress = [&run, base, table_share](double p, const std::string&) {
      run.set_progress(base + table_share * p);
    };
    metrics->RecordBatch(1, 0);
    auto rows = Quantize(*w.model, options);
    if (!rows.ok()) return rows.status();
    v1::Job job;
    v1::QuantizeResult* result = job.mutable_quantize();
    if (exporting) {
      const QuantizeSetting* setting = nullptr;
      for (const QuantizeSetting& s : options.settings) {
        if (!s.IsBaseline()) setting = &s;
      }
      if (setting == nullptr) return absl::InternalError("an export without its setting");
      if (w.quantize_export.format == "hf") {
        if (absl::Status s = ExportHf(w, *setting, run.cancelled, result->mutable_exported());
            !s.ok()) {
          return s;
        }
      } else {
        const double done = base + table_share;
        StepProgress progress(options.harness, options.plan.steps(),
                              [&run, done](double p, const std::string&) {
                                run.set_progress(done + (1 - done) * p);
                              });
        auto row = ExportGgufAndEvaluate(w, *setting, run.cancelled, &progress,
                                         result->mutable_exported());
        if (!row.ok()) return row.status();
        rows->push_back(std::move(*row));
      }
    }
    const v1::ExportedModel exported = result->exported();
    *result = ToProto(*rows);
    if (exporting) *result->mutable_exported() = exported;
    RecordSuperWeights(w, options.super_weights, result);
    for (const std::string& name : skipped) result->add_skipped_settings(name);
    return job;
  }

 public:
  // The export is written under its staging name and takes its own only here, after everything
  // else the job does: a job that fails or is cancelled publishes nothing.
  absl::Status Publish(JobWork& work) const override {
    const JobWork::Export& e = work.quantize_export;
    if (e.format.empty()) return absl::OkStatus();
    if (absl::Status s = RenameWithoutReplacing(e.staged, e.path); !s.ok()) {
      if (absl::IsAlreadyExists(s)) {
        return absl::AlreadyExistsError(absl::StrCat(
            "export ", e.relative_path, " was published by another job meanwhile; nothing of ",
            "this one was kept"));
      }
      return RelativeToExportRoot(s, e);
    }
    return absl::OkStatus();
  }

  void Discard(JobWork& work) const override {
    if (!work.quantize_export.staged.empty()) RemoveStaged(work.quantize_export.staged);
  }
};

}  // namespace

const JobKind& QuantizeJobKind() {
  static const QuantizeJob kind;
  return kind;
}

namespace {

// A Quantize request's export checked and placed under --export_root (nothing when it asks for
// none).
absl::Status PlanExport(const PlanContext& context, const v1::QuantizeRequest& req, const Model& m,
                        const std::vector<QuantizeSetting>& settings, JobWork::Export* out) {
  if (req.export_format().empty()) {
    if (!req.export_name().empty() || !req.super_weight_tensor_type().empty()) {
      return absl::InvalidArgumentError("export_name and super_weight_tensor_type need export");
    }
    return absl::OkStatus();
  }
  if (context.export_root.empty()) {
    return absl::InvalidArgumentError("this server has no --export_root: exports are refused");
  }
  for (const QuantizeSetting& s : settings) {
    if (s.activation_bits > 0) {
      return absl::InvalidArgumentError(
          "an export writes weights: activation quantization happens at run time and no file "
          "carries it (drop activation_bits to export)");
    }
  }
  if (std::count_if(settings.begin(), settings.end(),
                    [](const QuantizeSetting& s) { return !s.IsBaseline(); }) != 1) {
    return absl::InvalidArgumentError("an export writes one setting: give exactly one besides FP");
  }
  const std::string& format = req.export_format();
  if (format.rfind("gguf:", 0) == 0) {
    // gguf:TYPE, one type for every linear weight (TYPE as dtype.h names it); gguf:mix:FILE_TYPE,
    // llama-quantize's choice for every tensor (any case, its aliases too); a mix whose name no
    // type has (Q4_K_M, Q3_K_S...) may drop the "mix:".
    const std::string name = format.substr(5);
    const bool mix_prefix = name.rfind("mix:", 0) == 0;
    auto type = DTypeFromName(name);
    if (mix_prefix || (!type.ok() && IsMixOwnName(name))) {
      auto file_type = FindLlamaFileType(mix_prefix ? name.substr(4) : name);
      if (!file_type.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("export ", Utf8Prefix(format, 40), ": ", file_type.status().message()));
      }
      out->llama_file_type = *file_type;
      type = file_type->default_type;
    } else if (!type.ok() || !HasGgmlQuantizer(*type)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "export ", Utf8Prefix(format, 40),
          ": gguf:TYPE (Q2_K, Q3_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, "
          "F32) or gguf:mix:FILE_TYPE (llama-quantize's: Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, "
          "Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0, Q4_0...)"));
    }
    if (m.format != ModelFormat::kGguf) {
      return absl::FailedPreconditionError(
          "a GGUF export carries over a GGUF source's metadata and tokenizer: this model is not "
          "a GGUF file");
    }
    out->format = "gguf";
    out->type = *type;
    if (!req.super_weight_tensor_type().empty()) {
      auto sw_type = DTypeFromName(req.super_weight_tensor_type());
      if (!sw_type.ok() || !HasGgmlQuantizer(*sw_type)) {
        return absl::InvalidArgumentError("super_weight_tensor_type: F16 or Q8_0 (any GGUF type)");
      }
      out->super_weight_tensor_type = *sw_type;
    }
  } else if (format == "hf" || format == "hf:bf16" || format == "hf:f32") {
    out->format = "hf";
    out->type = format == "hf:f32" ? DType::kF32 : DType::kBF16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown export '", Utf8Prefix(format, 40), "' (gguf:TYPE, hf, hf:f32)"));
  }
  const std::string& name = req.export_name();
  if (name.empty() || name.size() > 200 || name[0] == '.' ||
      name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
          std::string::npos) {
    return absl::InvalidArgumentError(
        "export_name: a plain file or directory name under --export_root (letters, digits, "
        "'.', '_', '-'; not starting with '.')");
  }
  if (out->format == "gguf" && !absl::EndsWith(name, ".gguf")) {
    return absl::InvalidArgumentError(
        "export_name: a GGUF export's name ends in .gguf (the server opens files by it)");
  }
  if (out->format == "hf" && absl::EndsWith(name, ".gguf")) {
    return absl::InvalidArgumentError(
        "export_name: a Hugging Face export is a directory; .gguf names GGUF files");
  }
  out->relative_path = name;
  out->path = context.export_root + "/" + name;
  out->staged = StagingPath(context.export_root, name);
  struct stat st;
  if (::lstat(out->path.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat("export ", name, " already exists"));
  }
  if (!context.model_root.empty() && context.export_root.rfind(context.model_root + "/", 0) == 0) {
    out->model = context.export_root.substr(context.model_root.size() + 1) + "/" + name;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobWork> PlanQuantize(const PlanContext& context, const v1::QuantizeRequest& req) {
  auto model = context.registry->Get(req.model());
  if (!model.ok()) return model.status();
  const Model& m = **model;
  JobWork work;
  work.model = *model;
  QuantizeOptions& o = work.quantize;
  auto table = QuantizeTableOf(req);
  if (!table.ok()) return table.status();
  o.settings = std::move(*table);
  if (!req.rows().empty()) {
    if (!req.export_format().empty()) {
      return absl::InvalidArgumentError("rows: an export is written from its whole table");
    }
    std::vector<QuantizeSetting> chosen;
    for (int i = 0; i < req.rows_size(); ++i) {
      const int row = req.rows(i);
      if (row < 0 || row >= static_cast<int>(o.settings.size()) ||
          (i > 0 && row <= req.rows(i - 1))) {
        return absl::InvalidArgumentError(
            absl::StrFormat("rows: indices into the table's %d rows (0: FP), ascending, each once",
                            o.settings.size()));
      }
      chosen.push_back(o.settings[row]);
    }
    o.settings = std::move(chosen);
  }
  work.quantize_settings_named = !req.settings().empty();
  o.quantize_lm_head = req.quantize_lm_head();
  const bool evaluate = !std::count(req.tasks().begin(), req.tasks().end(), "none");
  if (!evaluate && req.tasks_size() > 1) {
    return absl::InvalidArgumentError("tasks: none stands alone (no evaluation at all)");
  }
  if (evaluate) {
    auto evaluation = context.CheckEvaluation(m, req.tasks(), req.max_examples(), req.window(),
                                              req.max_windows());
    if (!evaluation.ok()) return evaluation.status();
    work.load_inputs = [inputs = context.inputs, request = *evaluation](JobWork& w) {
      return inputs->Load(request, w.model, &w.quantize.plan);
    };
  }
  o.harness.precision = FromProto(req.precision());
  if (absl::Status s = PlanExport(context, req, m, o.settings, &work.quantize_export); !s.ok())
    return s;
  // Without a tokenizer there is nothing to locate with: the settings that need no super weight
  // still run (the job refuses those that need one).
  if (!req.super_weights().empty() || m.tokenizer != nullptr) {
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
