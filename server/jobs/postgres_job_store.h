// The PostgreSQL job store: replicas share one database as their durable job store and queue.
// A job row holds its request as sent; a replica claims queued rows (FOR UPDATE SKIP LOCKED)
// under a lease it renews while it runs them, plans them again from their requests, and writes
// a result only while its claim holds (fenced on the job and the attempt). Rows whose lease
// expired are requeued, up to max_attempts, by whichever replica sees them. LISTEN/NOTIFY wakes
// workers and watchers; they poll too, as a notification is a hint.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/jobs/job_kind.h"
#include "server/jobs/job_queue.h"
#include "server/jobs/job_store.h"
#include "server/jobs/postgres.h"
#include "server/metrics.h"

namespace superweight::server {

struct PostgresStoreOptions {
  std::string url;      // postgresql://...
  std::string replica;  // this replica's name in its claims (host and pid)
  int max_queued = 256;
  int max_batch = 32;
  std::chrono::milliseconds lease{30000};
  int max_attempts = 3;
  JobRetention retention;
};

// The schema version this build writes and reads.
inline constexpr int kJobStoreSchemaVersion = 1;

class PostgresJobStore final : public JobStore {
 public:
  // Connects and migrates the schema under an advisory lock. INVALID_ARGUMENT where the URL does
  // not parse, UNAVAILABLE where the database does not answer (naming the host, never the
  // password), FAILED_PRECONDITION where its schema is newer than this replica knows.
  static absl::StatusOr<std::unique_ptr<PostgresJobStore>> Open(PostgresStoreOptions options,
                                                                Metrics* metrics);
  ~PostgresJobStore() override;

  // Starts claiming and running jobs, planned with `planner` (which outlives the store).
  void Start(const PlanContext* planner);
  // The server is stopping: no job is claimed any more, and those running are handed back to
  // the queue for another replica (their attempt not counted). The destructor waits for it.
  void Stop();

  absl::StatusOr<std::string> Submit(JobSubmission submission) override;
  absl::StatusOr<v1::Job> Get(const std::string& id) const override;
  absl::StatusOr<v1::Job> Cancel(const std::string& id) override;
  absl::StatusOr<std::vector<v1::Job>> List(const std::string& model, int limit) const override;
  absl::StatusOr<v1::Job> WaitForChange(const std::string& id, const v1::Job& seen,
                                        int timeout_ms) const override;
  void OnHealthChange(std::function<void(bool serving)> handler) override;

 private:
  struct Claim;
  PostgresJobStore(PostgresStoreOptions options, Metrics* metrics);
  PostgresStoreOptions options_;
  Metrics* metrics_;
  const PlanContext* planner_ = nullptr;
  mutable pg::Pool pool_;

  // The job's row and, for one fanned out, its parts' rows, in one transaction.
  absl::StatusOr<pg::Result> InsertJob(const JobSubmission& submission,
                                       const std::vector<std::string>& parts);
  // A fanned-out job's parts read: its progress theirs; once they all succeeded, their results
  // assembled into its own; once one failed or was cancelled, it ends so and the others stop.
  void AssembleJob(int64_t seq);
  void WorkerLoop();
  void ListenLoop();
  // Claims the oldest queued job, and queued ones that may share its run; planned.
  absl::StatusOr<std::vector<std::unique_ptr<Claim>>> ClaimBatch();
  absl::Status PlanClaim(Claim* claim) const;
  void RunClaims(std::vector<std::unique_ptr<Claim>>& batch);
  // Writes the outcome while the claim holds (retrying while the store is unreachable).
  void FinishClaim(Claim* claim, const absl::StatusOr<v1::Job>& outcome);
  // Gives a claim back to the queue (a job that may not join a batch, or one this replica
  // stops running as it shuts down).
  void ReleaseClaim(const Claim& claim);
  // OK while the claim holds (its lease renewed under the fence); ABORTED once it does not.
  absl::Status StillHeld(Claim& claim);
  // Requeues (or fails) running jobs whose lease expired; applies the retention.
  void Maintain();
  void ReportQueue(pg::Connection& conn);
  // Connection failures turn the health NOT_SERVING until the store answers again.
  void SetReachable(bool reachable) const;
  template <typename T>
  absl::StatusOr<T> Observe(absl::StatusOr<T> result) const;

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;  // a notification arrived, or the store stops
  uint64_t notifications_ = 0;               // with mu_
  bool stopping_ = false;                    // with mu_
  std::atomic<bool> stop_flag_{false};
  std::function<void(bool)> on_health_;  // with mu_
  mutable std::atomic<bool> reachable_{true};
  // The last state read of jobs, answered from while the store is unreachable.
  mutable std::map<std::string, v1::Job> last_read_;
  std::thread worker_;
  std::thread listener_;
  std::chrono::steady_clock::time_point next_maintenance_{};
  std::chrono::steady_clock::time_point next_prune_{};
};

}  // namespace superweight::server
