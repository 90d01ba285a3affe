#include "server/metrics.h"

#include <exception>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/runtime/cpu.h"
#include "engine/runtime/matmul.h"
#include "engine/util/build_info.h"

namespace superweight::server {
namespace {

// civetweb's defaults (2 threads, 30 s to receive a request) let two clients that never finish
// their headers hold /metrics for half a minute. More threads than a few idle connections take,
// and a request timeout of half Prometheus' default scrape timeout (10 s), so a scrape is
// answered beside slow clients, or at worst after one timeout.
constexpr const char* kMetricsThreads = "8";
constexpr const char* kMetricsRequestTimeoutMs = "5000";

}  // namespace

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  BuildGauge()
      .Name("superweight_build_info")
      .Help("The build serving: version, git revision and the CPU class its kernels run at (1)")
      .Register(*registry_)
      .Add({{"version", std::string(Version())},
            {"revision", std::string(GitRevision())},
            {"cpu_class", IsaName(Cpu().active)}})
      .Set(1);
  requests_ = &BuildCounter()
                   .Name("superweight_requests_total")
                   .Help("RPCs handled, by method and gRPC status code")
                   .Register(*registry_);
  latency_ = &BuildHistogram()
                  .Name("superweight_request_duration_seconds")
                  .Help("RPC latency, by method")
                  .Register(*registry_);
  queue_depth_ = &BuildGauge()
                      .Name("superweight_queue_depth")
                      .Help("Jobs waiting to run")
                      .Register(*registry_)
                      .Add({});
  batch_sequences_ = &BuildHistogram()
                          .Name("superweight_batch_sequences")
                          .Help("Sequences per batched forward pass")
                          .Register(*registry_)
                          .Add({}, Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64});
  tokens_ = &BuildCounter()
                 .Name("superweight_tokens_processed_total")
                 .Help("Tokens run through forward passes")
                 .Register(*registry_)
                 .Add({});
  matmul_flops_ = &BuildCounter()
                       .Name("superweight_matmul_flops_total")
                       .Help("Floating-point operations of the forward passes' matmuls")
                       .Register(*registry_)
                       .Add({});
  matmul_seconds_ = &BuildCounter()
                         .Name("superweight_matmul_seconds_total")
                         .Help("Wall time in the forward passes' matmuls (all threads at once)")
                         .Register(*registry_)
                         .Add({});
  job_duration_ = &BuildHistogram()
                       .Name("superweight_job_duration_seconds")
                       .Help("Time from a job's start to its end, by kind")
                       .Register(*registry_);
  jobs_ = &BuildCounter()
               .Name("superweight_jobs_total")
               .Help("Jobs finished, by kind and final state")
               .Register(*registry_);
  auto& models =
      BuildGauge().Name("superweight_models_loaded").Help("Models open").Register(*registry_);
  models_loaded_ = &models.Add({});
  models_mapped_bytes_ = &BuildGauge()
                              .Name("superweight_models_mapped_bytes")
                              .Help("Bytes of model files mapped by open models")
                              .Register(*registry_)
                              .Add({});
  store_failures_ = &BuildCounter()
                         .Name("superweight_job_store_failures_total")
                         .Help("Job records the state directory could not take")
                         .Register(*registry_)
                         .Add({});
  unreadable_jobs_ = &BuildCounter()
                          .Name("superweight_unreadable_jobs_total")
                          .Help("Stored job records that could not be read back (moved aside)")
                          .Register(*registry_)
                          .Add({});
  jobs_stored_ = &BuildGauge()
                      .Name("superweight_jobs_stored")
                      .Help("Jobs held in memory and the state directory, in every state")
                      .Register(*registry_)
                      .Add({});
  jobs_pruned_ = &BuildCounter()
                      .Name("superweight_jobs_pruned_total")
                      .Help("Finished jobs dropped by --job_retention_age / --job_retention_count")
                      .Register(*registry_)
                      .Add({});
  watchers_ = &BuildGauge()
                   .Name("superweight_watchers")
                   .Help("WatchJob streams open")
                   .Register(*registry_)
                   .Add({});
  watchers_refused_ = &BuildCounter()
                           .Name("superweight_watchers_refused_total")
                           .Help("WatchJob streams refused for being over --max_watchers")
                           .Register(*registry_)
                           .Add({});
  store_queued_ = &BuildGauge()
                       .Name("superweight_store_jobs_queued")
                       .Help("Jobs queued in the shared job store, by kind (one replica reports)")
                       .Register(*registry_);
  store_oldest_queued_ =
      &BuildGauge()
           .Name("superweight_store_oldest_queued_age_seconds")
           .Help("Age of the oldest job queued in the shared job store (one replica reports)")
           .Register(*registry_)
           .Add({});
  store_running_ = &BuildGauge()
                        .Name("superweight_store_jobs_running")
                        .Help("Jobs running on any replica of the shared job store")
                        .Register(*registry_)
                        .Add({});
  leases_expired_ =
      &BuildCounter()
           .Name("superweight_store_leases_expired_total")
           .Help("Jobs whose replica stopped renewing its lease, requeued or failed by this one")
           .Register(*registry_)
           .Add({});
  staging_swept_ = &BuildCounter()
                        .Name("superweight_export_staging_swept_total")
                        .Help(
                            "Unpublished exports (of a server killed mid-export) removed from "
                            "--export_root at start-up")
                        .Register(*registry_)
                        .Add({});
}

absl::Status Metrics::Serve(const std::string& address) {
  if (address.empty()) return absl::OkStatus();
  // civetweb and prometheus-cpp report a busy port or a bad option by throwing.
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", address, "num_threads", kMetricsThreads,
                                 "request_timeout_ms", kMetricsRequestTimeoutMs});
    exposer_->RegisterCollectable(registry_);
  } catch (const std::exception& e) {
    exposer_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  return absl::OkStatus();
}

void Metrics::RecordRequest(const std::string& rpc, const std::string& code, double seconds) {
  requests_->Add({{"method", rpc}, {"code", code}}).Increment();
  latency_
      ->Add({{"method", rpc}},
            Histogram::BucketBoundaries{0.001, 0.005, 0.02, 0.1, 0.5, 1, 2, 5, 10, 30, 120})
      .Observe(seconds);
}

void Metrics::RecordBatch(int sequences, int64_t tokens) {
  batch_sequences_->Observe(sequences);
  tokens_->Increment(static_cast<double>(tokens));
}

void Metrics::UpdateMatmuls() {
  const LinearStats stats = GetLinearStats();
  std::lock_guard<std::mutex> lock(matmul_mu_);
  // The engine's totals are process-wide and only grow; the counters catch up to them.
  const double flops = static_cast<double>(stats.flops), seconds = 1e-9 * stats.nanos;
  if (flops > matmul_flops_->Value()) matmul_flops_->Increment(flops - matmul_flops_->Value());
  if (seconds > matmul_seconds_->Value()) {
    matmul_seconds_->Increment(seconds - matmul_seconds_->Value());
  }
}

void Metrics::SetStoreQueue(const std::string& kind, double queued) {
  store_queued_->Add({{"kind", kind}}).Set(queued);
}

void Metrics::RecordJob(const std::string& kind, const std::string& state, double seconds) {
  jobs_->Add({{"kind", kind}, {"state", state}}).Increment();
  job_duration_
      ->Add({{"kind", kind}}, Histogram::BucketBoundaries{0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300})
      .Observe(seconds);
  UpdateMatmuls();
}

void Metrics::SetModels(double loaded, double mapped_bytes) {
  models_loaded_->Set(loaded);
  models_mapped_bytes_->Set(mapped_bytes);
}

}  // namespace superweight::server
