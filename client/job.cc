#include "client/job.h"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "absl/strings/str_format.h"

namespace superweight::client {
namespace {

// The job this client waits on while following it (a terminal's progress bar), which an
// interrupt cancels: the server would otherwise run it for nobody. Waiting in a unary call needs
// nothing: the call ends with the process, and the server cancels its job.
struct FollowedJob {
  std::mutex mu;
  std::string id;
  bool interrupted = false;  // the interrupt's thread is cancelling it, then exits 130
};
FollowedJob& Followed() {
  static FollowedJob* followed = new FollowedJob;
  return *followed;
}

// Follows a job with a progress bar on stderr (a terminal) until it ends; returns it.
grpc::Status FollowJob(Stub* stub, const std::string& token, const std::string& id,
                       double timeout_s, v1::Job* job) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::WatchJobRequest req;
  req.set_job_id(id);
  auto reader = stub->WatchJob(&ctx, req);
  while (reader->Read(job)) {
    const int filled = static_cast<int>(30 * job->progress());
    std::cerr << "\r"
              << absl::StrFormat("%s [%s%s] %3.0f%% %-9s", job->id(), std::string(filled, '#'),
                                 std::string(30 - filled, ' '), 100 * job->progress(),
                                 v1::Job::State_Name(job->state()))
              << std::flush;
  }
  std::cerr << "\r" << std::string(60, ' ') << "\r" << std::flush;
  grpc::Status s = reader->Finish();
  if (!s.ok()) return s;
  if (job->state() != v1::Job::SUCCEEDED) {
    return grpc::Status(static_cast<grpc::StatusCode>(job->error_code() ? job->error_code() : 1),
                        job->error_message());
  }
  return grpc::Status::OK;
}

}  // namespace

void WatchForInterrupts(sigset_t signals, Stub* stub, std::string token) {
  std::thread([signals, stub, token] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::string id;
    {
      std::lock_guard<std::mutex> lock(Followed().mu);
      id = Followed().id;
      Followed().interrupted = true;
    }
    if (!id.empty()) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
      v1::CancelJobRequest req;
      req.set_job_id(id);
      v1::Job job;
      const grpc::Status s = stub->CancelJob(&ctx, req, &job);
      std::cerr << "\nsuperweight: interrupted; job " << id
                << (s.ok() ? " cancelled" : " could not be cancelled: " + s.error_message())
                << "\n";
    }
    std::_Exit(130);
  }).detach();
}

grpc::Status FollowUntilEnd(const VerbContext& context, const std::string& id, v1::Job* job) {
  {
    std::lock_guard<std::mutex> lock(Followed().mu);
    Followed().id = id;
  }
  grpc::Status s = FollowJob(context.stub, context.token, id, absl::GetFlag(FLAGS_timeout), job);
  // Ended by the interrupt's own cancel: its thread reports and exits, not this one.
  while (true) {
    std::unique_lock<std::mutex> lock(Followed().mu);
    if (!Followed().interrupted) {
      Followed().id.clear();
      break;
    }
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return s;
}

v1::Precision PrecisionFlag() {
  return absl::GetFlag(FLAGS_bf16) ? v1::PRECISION_BF16 : v1::PRECISION_F32;
}

}  // namespace superweight::client
