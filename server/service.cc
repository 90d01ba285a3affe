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
#include "engine/runtime/cpu.h"
#include "engine/util/build_info.h"
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

SuperWeightService::SuperWeightService(ModelRegistry* registry, JobStore* jobs, Metrics* metrics,
                                       ServiceOptions options)
    : registry_(registry), jobs_(jobs), metrics_(metrics), options_(std::move(options)) {
  planner_.registry = registry_;
  planner_.max_tokens = options_.max_tokens;
  planner_.max_text_tokens = options_.max_text_tokens;
  planner_.confirm_text = options_.confirm_text;
  planner_.export_root = options_.export_root;
  planner_.model_root = options_.model_root;
  planner_.inputs = std::make_shared<EvaluationInputs>(options_.eval_data_dir);
}

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
  while (job.ok() && !JobStore::Finished(*job)) {
    if (ctx->IsCancelled()) {
      jobs_->Cancel(id).IgnoreError();
      return absl::CancelledError("the client cancelled the call; its job was cancelled");
    }
    job = jobs_->WaitForChange(id, *job, 100);
  }
  return job;
}

template <typename Request>
absl::StatusOr<v1::Job> SuperWeightService::RunJob(
    grpc::ServerContext* ctx, const std::string& kind, const Request& req,
    absl::StatusOr<JobWork> (*plan)(const PlanContext&, const Request&), std::string* job_id) {
  if (absl::Status s = CheckRequestId(req.request_id()); !s.ok()) return s;
  auto work = plan(planner_, req);
  if (!work.ok()) return work.status();
  JobSubmission submission;
  submission.kind = kind;
  submission.model = req.model();
  submission.request_id = req.request_id();
  // What another replica plans again: the request as sent, but for the caller's async wish.
  Request stored = req;
  stored.clear_async();
  submission.request = stored.SerializeAsString();
  submission.model_identity = ModelIdentity(*work);
  submission.work = std::move(*work);
  auto id = jobs_->Submit(std::move(submission));
  if (!id.ok()) return id.status();
  *job_id = *id;
  if (req.async()) return jobs_->Get(*id);
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

grpc::Status SuperWeightService::GetServerInfo(grpc::ServerContext* ctx,
                                               const v1::GetServerInfoRequest*,
                                               v1::ServerInfo* resp) {
  return Handle("GetServerInfo", ctx, [&]() -> absl::Status {
    resp->set_version(std::string(Version()));
    resp->set_git_revision(std::string(GitRevision()));
    resp->set_cpu_class(IsaName(Cpu().active));
    resp->set_cpu_class_detected(IsaName(Cpu().detected));
    resp->set_job_store(options_.job_store);
    resp->set_replica(options_.replica);
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::Locate(grpc::ServerContext* ctx, const v1::LocateRequest* req,
                                        v1::LocateResponse* resp) {
  return Handle("Locate", ctx, [&]() -> absl::Status {
    auto job = RunJob(ctx, "locate", *req, &PlanLocate, resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_locate()) *resp->mutable_result() = job->locate();
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req,
                                       v1::ScoreResponse* resp) {
  return Handle("Score", ctx, [&]() -> absl::Status {
    auto job = RunJob(ctx, "score", *req, &PlanScore, resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_score()) *resp->mutable_result() = job->score();
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::Ablate(grpc::ServerContext* ctx, const v1::AblateRequest* req,
                                        v1::AblateResponse* resp) {
  return Handle("Ablate", ctx, [&]() -> absl::Status {
    auto job = RunJob(ctx, "ablate", *req, &PlanAblate, resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_ablate()) *resp->mutable_result() = job->ablate();
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::Quantize(grpc::ServerContext* ctx, const v1::QuantizeRequest* req,
                                          v1::QuantizeResponse* resp) {
  return Handle("Quantize", ctx, [&]() -> absl::Status {
    auto job = RunJob(ctx, "quantize", *req, &PlanQuantize, resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_quantize()) *resp->mutable_result() = job->quantize();
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::Check(grpc::ServerContext* ctx, const v1::CheckRequest* req,
                                       v1::CheckResponse* resp) {
  return Handle("Check", ctx, [&]() -> absl::Status {
    auto job = RunJob(ctx, "check", *req, &PlanCheck, resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_check()) *resp->mutable_result() = job->check();
    return absl::OkStatus();
  });
}

grpc::Status SuperWeightService::Recipe(grpc::ServerContext* ctx, const v1::RecipeRequest* req,
                                        v1::RecipeResponse* resp) {
  return Handle("Recipe", ctx, [&]() -> absl::Status {
    auto job = RunJob(ctx, "recipe", *req, &PlanRecipe, resp->mutable_job_id());
    if (!job.ok()) return job.status();
    if (job->has_recipe()) *resp->mutable_result() = job->recipe();
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
    while (!JobStore::Finished(*job)) {
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
    auto jobs = jobs_->List(req->model(), req->limit() > 0 ? req->limit() : 100);
    if (!jobs.ok()) return jobs.status();
    for (auto& j : *jobs) *resp->add_jobs() = std::move(j);
    return absl::OkStatus();
  });
}

}  // namespace superweight::server
