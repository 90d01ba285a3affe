// Long work as jobs: an id, a state, progress, cancellation and a stored result. One worker runs
// them in order (the forward pass already uses every core through oneDNN's OpenMP threads);
// queued single-sequence Score jobs on the same model and precision are batched into one pass.
// Finished jobs are written to the state directory and survive a restart; a job that was
// running when the server died is reported as failed.
#pragma once

#include <atomic>
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
#include "engine/analysis/ablate.h"
#include "engine/analysis/locate.h"
#include "engine/runtime/edit_set.h"
#include "server/metrics.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::server {

// The engine-side inputs of a job, validated when it is submitted.
struct JobWork {
  std::shared_ptr<const Model> model;
  std::vector<int32_t> tokens;
  Precision precision = Precision::kF32;
  EditSet edits;
  // Score: window 0 scores one sequence; > 0 is perplexity over windows.
  int window = 0;
  int max_windows = 0;
  // Locate; Ablate when it locates its super weights first (locate_super_weights), on `tokens`.
  LocateOptions locate;
  std::string known_model;
  // Ablate.
  AblateOptions ablate;
  bool locate_super_weights = false;
  int token_prob_contexts = 0;
};

class JobQueue {
 public:
  // max_batch: most sequences per batched pass (1 disables batching).
  JobQueue(std::string state_dir, int max_queued, int max_batch, Metrics* metrics);
  ~JobQueue();

  // Queues a job of `kind` ("locate", "score" or "ablate"); RESOURCE_EXHAUSTED when the queue is
  // full, INVALID_ARGUMENT for a kind no runner serves.
  absl::StatusOr<std::string> Submit(const std::string& kind, const std::string& model_name,
                                     JobWork work);
  absl::StatusOr<v1::Job> Get(const std::string& id) const;
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  std::vector<v1::Job> List(const std::string& model, int limit) const;

  // Blocks until the job changes (its state or progress differs from `seen`), `stop()` says
  // so, or `timeout_ms` passes; returns the job as it is then.
  absl::StatusOr<v1::Job> WaitForChange(const std::string& id, const v1::Job& seen,
                                        int timeout_ms) const;
  static bool Finished(const v1::Job& job);

 private:
  struct Entry {
    v1::Job job;
    JobWork work;
    std::atomic<bool> cancelled{false};
    int64_t started_unix_ms = 0;  // when the worker took it: job durations count from here
  };
  void WorkerLoop();
  void RunBatch(const std::vector<Entry*>& batch);
  void RunLocate(Entry* e);
  void RunAblate(Entry* e);
  void RunScoreBatch(const std::vector<Entry*>& batch);
  void Finish(Entry* e, const absl::Status& status);
  void Persist(const v1::Job& job) const;
  void LoadPersisted();
  void SetProgress(Entry* e, double p);

  std::string state_dir_;
  int max_queued_;
  int max_batch_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::map<std::string, std::unique_ptr<Entry>> jobs_;
  std::deque<std::string> queue_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::thread worker_;
};

}  // namespace superweight::server
