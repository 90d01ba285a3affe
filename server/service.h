// The gRPC frontend: request -> engine call (through the registry and the job queue) -> reply.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "server/evaluation_inputs.h"
#include "server/jobs/job_planner.h"
#include "server/jobs/job_store.h"
#include "server/jobs/job_work.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "superweight/v1/superweight.grpc.pb.h"

namespace superweight::server {

// The first 16 KiB of WikiText-2's test split, compiled in (data/SOURCES.md): the confirmation
// text superweightd uses unless --confirm_text_file names another.
extern const char kDefaultConfirmationText[];

struct ServiceOptions {
  int max_tokens = 8192;  // per request (Score's windows may read more: max_text_tokens)
  int max_text_tokens = 1 << 20;
  std::string bearer_token;         // empty: no authentication
  std::string confirm_text;         // Locate's default confirmation text
  std::string eval_data_dir;        // Ablate's evaluation sets (data/eval/, data/SOURCES.md)
  std::string export_root;          // where Quantize writes exports (empty: refused)
  std::string model_root;           // to name exports the registry can open
  int max_watchers = 64;            // WatchJob streams open at once; more are RESOURCE_EXHAUSTED
  std::string job_store = "files";  // GetServerInfo's: files or postgresql
  std::string replica;              // a shared store's name of this replica
};

class SuperWeightService final : public v1::SuperWeightService::Service {
 public:
  SuperWeightService(ModelRegistry* registry, JobStore* jobs, Metrics* metrics,
                     ServiceOptions options);

  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                          v1::ListModelsResponse* resp) override;
  grpc::Status Locate(grpc::ServerContext* ctx, const v1::LocateRequest* req,
                      v1::LocateResponse* resp) override;
  grpc::Status Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req,
                     v1::ScoreResponse* resp) override;
  grpc::Status Ablate(grpc::ServerContext* ctx, const v1::AblateRequest* req,
                      v1::AblateResponse* resp) override;
  grpc::Status Quantize(grpc::ServerContext* ctx, const v1::QuantizeRequest* req,
                        v1::QuantizeResponse* resp) override;
  grpc::Status Check(grpc::ServerContext* ctx, const v1::CheckRequest* req,
                     v1::CheckResponse* resp) override;
  grpc::Status Recipe(grpc::ServerContext* ctx, const v1::RecipeRequest* req,
                      v1::RecipeResponse* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::Job* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::Job>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                         v1::Job* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* resp) override;
  grpc::Status GetServerInfo(grpc::ServerContext* ctx, const v1::GetServerInfoRequest* req,
                             v1::ServerInfo* resp) override;

  // What each job RPC does before it queues its job (job_planner.h): nothing is queued or run;
  // the handlers and tests/fuzz/request_fuzzer.cc call these.
  const PlanContext& planner() const { return planner_; }

 private:
  // Runs `body` after authentication, records metrics, converts the status.
  template <typename Body>
  grpc::Status Handle(const char* rpc, grpc::ServerContext* ctx, Body body);
  absl::Status Authenticate(grpc::ServerContext* ctx) const;
  // Waits for a job the unary call submitted, honouring the client's deadline and cancellation.
  absl::StatusOr<v1::Job> AwaitJob(grpc::ServerContext* ctx, const std::string& id);
  // The request planned (the caller hears what is wrong at once), submitted and awaited; a job
  // that did not succeed becomes its status. Sets *job_id when queued. With req.async(), returns
  // the queued job at once.
  template <typename Request>
  absl::StatusOr<v1::Job> RunJob(
      grpc::ServerContext* ctx, const std::string& kind, const Request& req,
      absl::StatusOr<JobWork> (*plan)(const PlanContext&, const Request&), std::string* job_id);
  ModelRegistry* registry_;
  JobStore* jobs_;
  Metrics* metrics_;
  ServiceOptions options_;
  std::atomic<int> watchers_{0};  // WatchJob streams open
  PlanContext planner_;
};

grpc::Status ToGrpc(const absl::Status& s);

}  // namespace superweight::server
