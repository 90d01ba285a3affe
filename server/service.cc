#include "server/service.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/formats/quantize_ggml.h"
#include "engine/util/publish.h"
#include "engine/util/utf8_prefix.h"
#include "server/convert.h"
#include "server/known_directory.h"

namespace superweight::server {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // An error may echo what the caller sent (a model name, a job id): capped, so that it always
  // fits gRPC's metadata limit and the client reads the error rather than RESOURCE_EXHAUSTED.
  constexpr size_t kMaxMessage = 1024;
  std::string message(s.message());
  if (message.size() > kMaxMessage) {
    message =
        absl::StrCat(Utf8Prefix(message, kMaxMessage), "... (", s.message().size(), " bytes)");
  }
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), message);
}

namespace {

// Job ids are "job-" and digits; anything else (too long, not UTF-8) is refused before lookup.
absl::Status CheckJobId(const std::string& id) {
  const bool well_formed = id.size() > 4 && id.size() <= 32 && id.rfind("job-", 0) == 0 &&
                           id.find_first_not_of("0123456789", 4) == std::string::npos;
  if (well_formed) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("job ids look like job-000001 (", id.size(), " bytes given)"));
}

}  // namespace

SuperWeightService::SuperWeightService(ModelRegistry* registry, JobQueue* jobs, Metrics* metrics,
                                       ServiceOptions options)
    : registry_(registry),
      jobs_(jobs),
      metrics_(metrics),
      options_(std::move(options)),
      inputs_(std::make_shared<EvaluationInputs>(options_.eval_data_dir)) {}

absl::Status SuperWeightService::Authenticate(grpc::ServerContext* ctx) const {
  if (options_.bearer_token.empty()) return absl::OkStatus();
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return absl::UnauthenticatedError("missing bearer token");
  const std::string value(it->second.data(), it->second.size());
  if (value != "Bearer " + options_.bearer_token) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

template <typename Body>
grpc::Status SuperWeightService::Handle(const char* rpc, grpc::ServerContext* ctx, Body body) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = Authenticate(ctx);
  // Nothing a handler throws reaches gRPC (which would answer UNKNOWN with no message).
  try {
    if (status.ok()) status = body();
  } catch (const std::bad_alloc&) {
    status = absl::ResourceExhaustedError(absl::StrCat(rpc, " ran out of memory"));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat(rpc, " failed unexpectedly: ", e.what()));
  }
  metrics_->RecordRequest(
      rpc, absl::StatusCodeToString(status.code()),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  metrics_->SetModels(registry_->LoadedCount(), static_cast<double>(registry_->LoadedBytes()));
  return ToGrpc(status);
}

absl::StatusOr<v1::Job> SuperWeightService::AwaitJob(grpc::ServerContext* ctx,
                                                     const std::string& id) {
  auto job = jobs_->Get(id);
  while (job.ok() && !JobQueue::Finished(*job)) {
    if (ctx->IsCancelled()) {
      jobs_->Cancel(id).IgnoreError();
      return absl::CancelledError("the client cancelled the call; its job was cancelled");
    }
    job = jobs_->WaitForChange(id, *job, 100);
  }
  return job;
}

absl::StatusOr<v1::Job> SuperWeightService::RunJob(grpc::ServerContext* ctx,
                                                   const std::string& kind,
                                                   const std::string& model, JobWork work,
                                                   bool async, std::string* job_id) {
  auto id = jobs_->Submit(kind, model, std::move(work));
  if (!id.ok()) return id.status();
  *job_id = *id;
  if (async) return jobs_->Get(*id);
  auto job = AwaitJob(ctx, *id);
  if (!job.ok()) return job.status();
  if (job->state() != v1::Job::SUCCEEDED) {
    // A cancelled job carries no code of its own: CANCELLED (1).
    return absl::Status(static_cast<absl::StatusCode>(job->error_code() ? job->error_code() : 1),
                        job->error_message());
  }
  return job;
}

grpc::Status SuperWeightService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                            v1::ListModelsResponse* resp) {
  return Handle("ListModels", ctx, [&]() -> absl::Status {
    for (const std::string& name : registry_->Discover()) {
      auto summary = registry_->Describe(name);
      if (!summary.ok()) continue;  // a broken file is not a model: listed by nobody
      *resp->add_models() = ToProto(*summary, name);
    }
    return absl::OkStatus();
  });
}

absl::Status SuperWeightService::SetConfirmation(const Model& model, const std::string& text,
                                                 LocateOptions* options) const {
  if (text.empty() || model.tokenizer == nullptr) return absl::OkStatus();
  EncodeOptions encode;
  encode.add_bos = model.config.add_bos;
  encode.max_tokens = static_cast<size_t>(options_.max_text_tokens);
  auto tokenized = model.tokenizer->Tokenize(text, encode);
  if (!tokenized.ok()) {
    return absl::Status(tokenized.status().code(),
                        absl::StrCat("confirmation text: ", tokenized.status().message()));
  }
  options->confirm_tokens = std::move(*tokenized);
  options->confirm_window = std::min<int>(512, options->confirm_tokens.size());
  if (options->confirm_window < 2) options->confirm_tokens.clear();
  return absl::OkStatus();
}

absl::Status SuperWeightService::CheckWindow(int window) const {
  // Each window is one pass: the per-sequence limit holds whatever the text's length.
  if (window > options_.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "window %d is over the server's limit of %d tokens per sequence (--max_tokens)", window,
        options_.max_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<JobWork> SuperWeightService::PlanLocate(const v1::LocateRequest& req) const {
  auto model = registry_->Get(req.model());
  if (!model.ok()) return model.status();
  JobWork work;
  work.model = *model;
  auto tokens = TokensFromInput(req.input(), **model, options_.max_tokens, kPaperPrompt);
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
      req.confirm_text().empty() ? options_.confirm_text : req.confirm_text();
  if (!req.skip_confirmation()) {
    if (absl::Status s = SetConfirmation(**model, confirm, &lo); !s.ok()) return s;
  }
  work.precision = lo.precision;
  work.known_model = RecogniseModel(req.model() + " " + (*model)->name);
  return work;
}

grpc::Status SuperWeightService::Locate(grpc::ServerContext* ctx, const v1::LocateRequest* req,
                                        v1::LocateResponse* resp) {
  return Handle("Locate", ctx, [&]() -> absl::Status {
    auto work = PlanLocate(*req);
    if (!work.ok()) return work.status();
    auto job =
        RunJob(ctx, "locate", req->model(), std::move(*work), req->async(), resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_locate()) *resp->mutable_result() = job->locate();
    return absl::OkStatus();
  });
}

absl::StatusOr<JobWork> SuperWeightService::PlanScore(const v1::ScoreRequest& req) const {
  auto model = registry_->Get(req.model());
  if (!model.ok()) return model.status();
  if (req.window() < 0 || req.max_windows() < 0 || req.window() == 1) {
    return absl::InvalidArgumentError("window must be 0 (one sequence) or at least 2");
  }
  if (absl::Status s = CheckWindow(req.window()); !s.ok()) return s;
  JobWork work;
  work.model = *model;
  const int limit = req.window() > 0 ? options_.max_text_tokens : options_.max_tokens;
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

grpc::Status SuperWeightService::Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req,
                                       v1::ScoreResponse* resp) {
  return Handle("Score", ctx, [&]() -> absl::Status {
    auto work = PlanScore(*req);
    if (!work.ok()) return work.status();
    auto job =
        RunJob(ctx, "score", req->model(), std::move(*work), req->async(), resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_score()) *resp->mutable_result() = job->score();
    return absl::OkStatus();
  });
}

absl::StatusOr<EvaluationRequest> SuperWeightService::CheckEvaluation(
    const Model& m, const google::protobuf::RepeatedPtrField<std::string>& requested,
    int max_examples, int window, int max_windows) const {
  if (max_examples < 0 || max_windows < 0 || window < 0 || window == 1) {
    return absl::InvalidArgumentError(
        "max_examples and max_windows must not be negative, and window must be 0 (the default, "
        "512) or at least 2");
  }
  if (absl::Status s = CheckWindow(window); !s.ok()) return s;
  if (m.tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        "this model has no tokenizer: the evaluation harness scores text (WikiText-2 and the "
        "zero-shot tasks)");
  }
  std::vector<std::string> tasks(requested.begin(), requested.end());
  if (tasks.empty()) {
    tasks = {"wikitext2"};
    for (const std::string& t : ZeroShotTaskNames()) tasks.push_back(t);
  }
  EvaluationRequest request;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const std::string& name = tasks[i];
    if (std::find(tasks.begin(), tasks.begin() + i, name) != tasks.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("task ", Utf8Prefix(name, 40),
                       " is given more than once (it would count twice in the "
                       "average)"));
    }
    if (name == "wikitext2") {
      request.wikitext2 = true;
      continue;
    }
    if (absl::Status s = CheckTaskName(name); !s.ok()) return s;
    request.tasks.push_back(name);
  }
  request.max_examples = max_examples;
  request.window = window > 0 ? window : 512;
  request.max_windows = max_windows;
  return request;
}

absl::Status SuperWeightService::SuperWeightsOrLocate(
    const Model& m, const google::protobuf::RepeatedPtrField<v1::Coordinate>& named,
    Precision precision, JobWork* work, std::vector<SuperWeightCoordinate>* super_weights) const {
  for (const v1::Coordinate& c : named) {
    if (c.has_expert() && c.expert() < 0) {
      return absl::InvalidArgumentError(absl::StrFormat("expert %d is negative", c.expert()));
    }
    super_weights->push_back(FromProto(c));
  }
  if (absl::Status s = CheckSuperWeights(m, *super_weights); !s.ok()) return s;
  if (!super_weights->empty()) return absl::OkStatus();
  if (m.tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        "this model has no tokenizer to locate its super weights: name them with super_weights");
  }
  work->locate_super_weights = true;
  work->tokens = m.tokenizer->Encode(kPaperPrompt, m.config.add_bos);
  work->locate.precision = precision;
  return SetConfirmation(m, options_.confirm_text, &work->locate);
}

absl::StatusOr<JobWork> SuperWeightService::PlanAblate(const v1::AblateRequest& req) const {
  auto model = registry_->Get(req.model());
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
  // Pruning experts alone needs no super weight: none is located for it.
  const bool needs_super_weights =
      std::any_of(o.settings.begin(), o.settings.end(), [](const AblationSetting& s) {
        return s.kind != AblationKind::kIntact && s.kind != AblationKind::kPruneExpert;
      });
  auto evaluation =
      CheckEvaluation(m, req.tasks(), req.max_examples(), req.window(), req.max_windows());
  if (!evaluation.ok()) return evaluation.status();
  if (std::find(settings.begin(), settings.end(), "token_probs") != settings.end()) {
    evaluation->token_prob_contexts =
        req.token_prob_contexts() > 0 ? req.token_prob_contexts() : 500;
  }
  // Read when the job runs: a queued job holds its request, not the data.
  work.load_inputs = [inputs = inputs_, request = *evaluation](JobWork& w) {
    return inputs->Load(request, w.model, &w.ablate.plan, &w.ablate.token_probability_contexts);
  };
  if (req.outlier_fraction() > 0) o.outlier_fraction = req.outlier_fraction();
  o.harness.precision = FromProto(req.precision());
  if (needs_super_weights || !req.super_weights().empty()) {
    if (absl::Status s = SuperWeightsOrLocate(m, req.super_weights(), o.harness.precision, &work,
                                              &o.super_weights);
        !s.ok()) {
      return s;
    }
  }
  work.precision = o.harness.precision;
  return work;
}

grpc::Status SuperWeightService::Ablate(grpc::ServerContext* ctx, const v1::AblateRequest* req,
                                        v1::AblateResponse* resp) {
  return Handle("Ablate", ctx, [&]() -> absl::Status {
    auto work = PlanAblate(*req);
    if (!work.ok()) return work.status();
    auto job =
        RunJob(ctx, "ablate", req->model(), std::move(*work), req->async(), resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_ablate()) *resp->mutable_result() = job->ablate();
    return absl::OkStatus();
  });
}

absl::Status SuperWeightService::PlanExport(const v1::QuantizeRequest& req, const Model& m,
                                            const std::vector<QuantizeSetting>& settings,
                                            JobWork::Export* out) const {
  if (req.export_format().empty()) {
    if (!req.export_name().empty() || !req.super_weight_tensor_type().empty()) {
      return absl::InvalidArgumentError("export_name and super_weight_tensor_type need export");
    }
    return absl::OkStatus();
  }
  if (options_.export_root.empty()) {
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
    auto type = DTypeFromName(format.substr(5));
    if (!type.ok() || !HasGgmlQuantizer(*type)) {
      return absl::InvalidArgumentError(
          absl::StrCat("export ", Utf8Prefix(format, 40),
                       ": the GGUF types are Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, "
                       "BF16, F32"));
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
  out->path = options_.export_root + "/" + name;
  out->staged = StagingPath(options_.export_root, name);
  struct stat st;
  if (::lstat(out->path.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat("export ", name, " already exists"));
  }
  if (!options_.model_root.empty() &&
      options_.export_root.rfind(options_.model_root + "/", 0) == 0) {
    out->model = options_.export_root.substr(options_.model_root.size() + 1) + "/" + name;
  }
  return absl::OkStatus();
}

absl::StatusOr<JobWork> SuperWeightService::PlanQuantize(const v1::QuantizeRequest& req) const {
  auto model = registry_->Get(req.model());
  if (!model.ok()) return model.status();
  const Model& m = **model;
  JobWork work;
  work.model = *model;
  QuantizeOptions& o = work.quantize;
  o.settings = {QuantizeSetting{true, {}, false}};  // the baseline, always first
  for (int i = 0; i < req.settings_size(); ++i) {
    auto setting = FromProto(req.settings(i));
    if (!setting.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("settings[", i, "]: ", setting.status().message()));
    }
    if (!setting->IsBaseline()) o.settings.push_back(*setting);
  }
  if (req.settings().empty()) o.settings = DefaultQuantizeSettings();
  work.quantize_settings_named = !req.settings().empty();
  o.quantize_lm_head = req.quantize_lm_head();
  const bool evaluate = !std::count(req.tasks().begin(), req.tasks().end(), "none");
  if (!evaluate && req.tasks_size() > 1) {
    return absl::InvalidArgumentError("tasks: none stands alone (no evaluation at all)");
  }
  if (evaluate) {
    auto evaluation =
        CheckEvaluation(m, req.tasks(), req.max_examples(), req.window(), req.max_windows());
    if (!evaluation.ok()) return evaluation.status();
    work.load_inputs = [inputs = inputs_, request = *evaluation](JobWork& w) {
      return inputs->Load(request, w.model, &w.quantize.plan);
    };
  }
  o.harness.precision = FromProto(req.precision());
  if (absl::Status s = PlanExport(req, m, o.settings, &work.quantize_export); !s.ok()) return s;
  // Without a tokenizer there is nothing to locate with: the settings that need no super weight
  // still run (the job refuses those that need one).
  if (!req.super_weights().empty() || m.tokenizer != nullptr) {
    if (absl::Status s = SuperWeightsOrLocate(m, req.super_weights(), o.harness.precision, &work,
                                              &o.super_weights);
        !s.ok()) {
      return s;
    }
  }
  work.precision = o.harness.precision;
  return work;
}

grpc::Status SuperWeightService::Quantize(grpc::ServerContext* ctx, const v1::QuantizeRequest* req,
                                          v1::QuantizeResponse* resp) {
  return Handle("Quantize", ctx, [&]() -> absl::Status {
    auto work = PlanQuantize(*req);
    if (!work.ok()) return work.status();
    auto job = RunJob(ctx, "quantize", req->model(), std::move(*work), req->async(),
                      resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_quantize()) *resp->mutable_result() = job->quantize();
    return absl::OkStatus();
  });
}

absl::StatusOr<JobWork> SuperWeightService::PlanCheck(const v1::CheckRequest& req) const {
  auto model = registry_->Get(req.model());
  if (!model.ok()) return model.status();
  auto reference = registry_->Get(req.reference());
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
  google::protobuf::RepeatedPtrField<std::string> wikitext;
  wikitext.Add("wikitext2");
  auto evaluation = CheckEvaluation(ref, wikitext, 0, req.window(),
                                    req.max_windows() > 0 ? req.max_windows() : 16);
  if (!evaluation.ok()) return evaluation.status();
  o.window = evaluation->window;
  o.max_windows = evaluation->max_windows;
  work.load_inputs = [inputs = inputs_, request = *evaluation](JobWork& w) {
    EvaluationPlan plan;
    if (absl::Status s = inputs->Load(request, w.reference, &plan); !s.ok()) return s;
    w.check.text = std::move(plan.wikitext2);
    return absl::OkStatus();
  };
  o.prompt = ref.tokenizer->Encode(kPaperPrompt, ref.config.add_bos);
  o.harness.precision = FromProto(req.precision());
  if (absl::Status s = SuperWeightsOrLocate(ref, req.super_weights(), o.harness.precision, &work,
                                            &o.super_weights);
      !s.ok()) {
    return s;
  }
  work.precision = o.harness.precision;
  return work;
}

grpc::Status SuperWeightService::Check(grpc::ServerContext* ctx, const v1::CheckRequest* req,
                                       v1::CheckResponse* resp) {
  return Handle("Check", ctx, [&]() -> absl::Status {
    auto work = PlanCheck(*req);
    if (!work.ok()) return work.status();
    auto job =
        RunJob(ctx, "check", req->model(), std::move(*work), req->async(), resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_check()) *resp->mutable_result() = job->check();
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                                        v1::Job* resp) {
  return Handle("GetJob", ctx, [&]() -> absl::Status {
    if (absl::Status s = CheckJobId(req->job_id()); !s.ok()) return s;
    auto job = jobs_->Get(req->job_id());
    if (!job.ok()) return job.status();
    *resp = std::move(*job);
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                          grpc::ServerWriter<v1::Job>* writer) {
  return Handle("WatchJob", ctx, [&]() -> absl::Status {
    if (absl::Status s = CheckJobId(req->job_id()); !s.ok()) return s;
    // A stream holds one of the synchronous server's threads while it waits: a place is taken
    // (never past the cap, even while refusals race) or the stream is refused.
    int open = watchers_.load();
    do {
      if (open >= options_.max_watchers) {
        metrics_->RecordWatcherRefused();
        return absl::ResourceExhaustedError(absl::StrFormat(
            "%d WatchJob streams are open, the most this server allows (--max_watchers); "
            "retry later, or poll GetJob",
            open));
      }
    } while (!watchers_.compare_exchange_weak(open, open + 1));
    metrics_->WatcherOpened();
    absl::Cleanup release = [this] {
      watchers_.fetch_sub(1);
      metrics_->WatcherClosed();
    };
    auto job = jobs_->Get(req->job_id());
    if (!job.ok()) return job.status();
    if (!writer->Write(*job)) return absl::CancelledError("client went away");
    while (!JobQueue::Finished(*job)) {
      if (ctx->IsCancelled()) return absl::CancelledError("client went away");
      auto next = jobs_->WaitForChange(req->job_id(), *job, 250);
      if (!next.ok()) return next.status();
      if (next->state() != job->state() || next->progress() != job->progress()) {
        if (!writer->Write(*next)) return absl::CancelledError("client went away");
      }
      job = std::move(next);
    }
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::CancelJob(grpc::ServerContext* ctx,
                                           const v1::CancelJobRequest* req, v1::Job* resp) {
  return Handle("CancelJob", ctx, [&]() -> absl::Status {
    if (absl::Status s = CheckJobId(req->job_id()); !s.ok()) return s;
    auto job = jobs_->Cancel(req->job_id());
    if (!job.ok()) return job.status();
    *resp = std::move(*job);
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                          v1::ListJobsResponse* resp) {
  return Handle("ListJobs", ctx, [&]() -> absl::Status {
    if (req->limit() < 0) return absl::InvalidArgumentError("limit must not be negative");
    for (auto& j : jobs_->List(req->model(), req->limit() > 0 ? req->limit() : 100)) {
      *resp->add_jobs() = std::move(j);
    }
    return absl::OkStatus();
  });
}

}  // namespace superweight::server
