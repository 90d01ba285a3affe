// Long work as jobs: an id, a state, progress, cancellation and a stored result. One worker runs
// them in order (the forward pass already uses every core through OpenMP), each through its kind
// (job_kind.h), which may let queued jobs join one run (Score: single sequences of one model
// and precision share a forward pass).
// Finished jobs are written to the state directory and survive a restart; a job that was
// running when the server died is reported as failed. Finished jobs are kept as the retention
// says (by age and count, oldest first), so memory and the state directory stay bounded.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/jobs/job_kind.h"
#include "server/jobs/job_store.h"
#include "server/jobs/job_work.h"
#include "server/metrics.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::server {

// Which finished jobs are kept, in memory and in the state directory; queued and running ones
// always are.
struct JobRetention {
  std::chrono::milliseconds max_age{0};  // since the job finished; zero: no limit
  int max_finished = 0;                  // the newest this many; zero: no limit
};

// The file store: the embedded default.
class JobQueue final : public JobStore {
 public:
  // max_batch: most sequences per batched pass (1 disables batching).
  JobQueue(std::string state_dir, int max_queued, int max_batch, JobRetention retention,
           Metrics* metrics);
  ~JobQueue();

  // Queues the submission's work as planned (INVALID_ARGUMENT for a kind nobody registered).
  absl::StatusOr<std::string> Submit(JobSubmission submission) override;
  absl::StatusOr<v1::Job> Get(const std::string& id) const override;
  absl::StatusOr<v1::Job> Cancel(const std::string& id) override;
  absl::StatusOr<std::vector<v1::Job>> List(const std::string& model, int limit) const override;
  absl::StatusOr<v1::Job> WaitForChange(const std::string& id, const v1::Job& seen,
                                        int timeout_ms) const override;
  // Called (once, with false) the first time a record cannot be stored after start-up.
  void OnHealthChange(std::function<void(bool serving)> handler) override;

  // Not OK where the state directory cannot take records (checked at construction by writing
  // one): the server refuses to start on it.
  const absl::Status& StorageStatus() const { return storage_status_; }

 private:
  struct Entry {
    v1::Job job;
    JobWork work;
    std::atomic<bool> cancelled{false};  // by the client, a faulted model or the server stopping
    bool cancelled_by_client = false;    // with mu_ held
    int64_t started_unix_ms = 0;         // when the worker took it: job durations count from here
  };
  void WorkerLoop();
  void RunBatch(const JobKind& kind, const std::vector<Entry*>& batch);
  void Finish(Entry* e, const absl::Status& status);
  // Writes the record aside and renames it; on failure notes it in the job, the log and
  // /metrics. Called with mu_ held, or before the worker starts.
  void Persist(v1::Job* job);
  void LoadPersisted();
  // Drops the finished jobs the retention no longer keeps, from memory and the state directory.
  // Only the worker calls it (between batches) or the constructor, so no batch's entry goes
  // while the worker holds it; with mu_ held. Waiters find their job again by id after waking.
  void Prune();
  // The id counter, kept beside the records so that ids of pruned jobs are not handed out
  // again after a restart.
  void PersistNextId();
  void SetProgress(Entry* e, double p);

  std::string state_dir_;
  absl::Status storage_status_;
  std::function<void(bool)> on_storage_failure_;
  bool storage_failed_ = false;
  int max_queued_;
  int max_batch_;
  JobRetention retention_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  // Job ids ("job-" and at least six digits) in numeric order: a longer id is a later one.
  struct IdOrder {
    bool operator()(const std::string& a, const std::string& b) const {
      return a.size() != b.size() ? a.size() < b.size() : a < b;
    }
  };
  std::map<std::string, std::unique_ptr<Entry>, IdOrder> jobs_;
  std::deque<std::string> queue_;
  std::map<std::string, std::string> by_request_id_;  // request_id -> job id, of kept jobs
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::thread worker_;
};

}  // namespace superweight::server
