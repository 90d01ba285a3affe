// Prometheus metrics of the server, served on /metrics by prometheus-cpp.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace superweight::server {

class Metrics {
 public:
  Metrics();
  // Serves /metrics on `address` (host:port); empty: metrics are kept but not served. Not OK
  // where the address cannot be served (a busy port, a malformed address).
  absl::Status Serve(const std::string& address);

  void RecordRequest(const std::string& rpc, const std::string& code, double seconds);
  void SetQueueDepth(double depth) { queue_depth_->Set(depth); }
  void RecordBatch(int sequences, int64_t tokens);
  // Also brings the matmul counters up to the engine's process-wide LinearStats (their rate is
  // what the CPU's peak bounds).
  void RecordJob(const std::string& kind, const std::string& state, double seconds);
  void SetModels(double loaded, double mapped_bytes);
  // Job records the state directory could not take, and stored ones it could not read back
  // (moved aside to jobs/unreadable/).
  void RecordStoreFailure() { store_failures_->Increment(); }
  void RecordUnreadableJob() { unreadable_jobs_->Increment(); }
  // Jobs held (in memory and the state directory), and finished ones dropped by retention.
  void SetJobsStored(double jobs) { jobs_stored_->Set(jobs); }
  void RecordJobsPruned(double jobs) { jobs_pruned_->Increment(jobs); }
  // WatchJob streams open, and those refused for being over --max_watchers.
  void WatcherOpened() { watchers_->Increment(); }
  void WatcherClosed() { watchers_->Decrement(); }
  void RecordWatcherRefused() { watchers_refused_->Increment(); }
  // The shared job store's queue, as one replica at a time reads it from the database (the
  // others report nothing, so that a sum over replicas counts each job once): what an
  // autoscaler scales on.
  void SetStoreQueue(const std::string& kind, double queued);
  void SetStoreOldestQueuedAge(double seconds) { store_oldest_queued_->Set(seconds); }
  void SetStoreRunning(double running) { store_running_->Set(running); }
  // Jobs whose replica stopped renewing its lease, requeued (or failed) by this replica.
  void RecordLeasesExpired(double jobs) { leases_expired_->Increment(jobs); }
  // Staged exports a killed server left under --export_root, removed at start-up.
  void RecordStagingSwept(double entries) { staging_swept_->Increment(entries); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Gauge* queue_depth_;
  prometheus::Histogram* batch_sequences_;
  prometheus::Counter* tokens_;
  void UpdateMatmuls();
  std::mutex matmul_mu_;
  prometheus::Counter* matmul_flops_;
  prometheus::Counter* matmul_seconds_;
  prometheus::Family<prometheus::Histogram>* job_duration_;
  prometheus::Family<prometheus::Counter>* jobs_;
  prometheus::Gauge* models_loaded_;
  prometheus::Gauge* models_mapped_bytes_;
  prometheus::Counter* store_failures_;
  prometheus::Counter* unreadable_jobs_;
  prometheus::Gauge* jobs_stored_;
  prometheus::Counter* jobs_pruned_;
  prometheus::Gauge* watchers_;
  prometheus::Counter* watchers_refused_;
  prometheus::Counter* staging_swept_;
  prometheus::Family<prometheus::Gauge>* store_queued_;
  prometheus::Gauge* store_oldest_queued_;
  prometheus::Gauge* store_running_;
  prometheus::Counter* leases_expired_;
};

}  // namespace superweight::server
