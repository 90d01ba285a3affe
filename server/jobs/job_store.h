// Where jobs live: submitted, claimed and run by a worker, read and cancelled by the RPCs. One
// interface, two stores: the file store (job_queue.h), the embedded default, whose jobs live in
// one process and its --state_dir; and the PostgreSQL store (postgres_job_store.h), shared by
// replicas, any of which runs any job and answers for every one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/jobs/job_work.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::server {

// A job as submitted: its request as sent, so that any replica can plan it again, and the work
// the submitting replica planned from it (the file store runs that as it is).
struct JobSubmission {
  std::string kind;
  std::string model;
  std::string request;         // the request message, serialized
  std::string request_id;      // the caller's idempotency key, or ""
  std::string model_identity;  // ModelIdentity of the work's models (job_planner.h)
  JobWork work;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // The new job's id, or, where a job with the same request_id was submitted before, that one's
  // (INVALID_ARGUMENT where that was a job of another kind or model). RESOURCE_EXHAUSTED when the
  // queue is full, UNAVAILABLE when the store cannot be reached.
  virtual absl::StatusOr<std::string> Submit(JobSubmission submission) = 0;
  virtual absl::StatusOr<v1::Job> Get(const std::string& id) const = 0;
  // Cancels a queued job at once; a running one is asked to stop and waited for a few seconds.
  virtual absl::StatusOr<v1::Job> Cancel(const std::string& id) = 0;
  // The newest `limit` jobs, of `model` where not empty.
  virtual absl::StatusOr<std::vector<v1::Job>> List(const std::string& model, int limit) const = 0;
  // Blocks until the job changes (its state or progress differs from `seen`), the store stops,
  // or `timeout_ms` passes; returns the job as it is then.
  virtual absl::StatusOr<v1::Job> WaitForChange(const std::string& id, const v1::Job& seen,
                                                int timeout_ms) const = 0;
  // Called with false when the store stops taking records (the server then reports NOT_SERVING)
  // and, for a store that can come back, with true when it does. Null removes it.
  virtual void OnHealthChange(std::function<void(bool serving)> handler) = 0;

  static bool Finished(const v1::Job& job) {
    return job.state() == v1::Job::SUCCEEDED || job.state() == v1::Job::FAILED ||
           job.state() == v1::Job::CANCELLED;
  }
};

// Milliseconds since the Unix epoch, as jobs record their times.
int64_t UnixNowMs();
// A state as metrics label it: "succeeded", "failed", ...
std::string JobStateName(v1::Job::State state);

// A caller's request_id: empty, or up to 128 printable ASCII characters.
absl::Status CheckRequestId(const std::string& request_id);
// INVALID_ARGUMENT where `existing`, the job a request_id named before, is not of the
// submission's kind and model: a key reused for other work is the caller's mistake.
absl::Status SameRequest(const v1::Job& existing, const JobSubmission& submission);

}  // namespace superweight::server
