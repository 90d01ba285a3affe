// watch and cancel: following one job until it ends, and stopping one.
#include <unistd.h>

#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "client/common.h"
#include "client/verb.h"

namespace superweight::client {
namespace job_control {  // one per verb: verbs compile together

Exit Watch(const VerbContext& context) {
  if (absl::GetFlag(FLAGS_job).empty()) return Usage("--job=ID is required");
  v1::WatchJobRequest req;
  req.set_job_id(absl::GetFlag(FLAGS_job));
  auto reader = context.stub->WatchJob(context.call, req);
  v1::Job job;
  const bool tty = ::isatty(1);
  while (reader->Read(&job)) {
    if (context.json) {
      PrintJson(job, /*one_line=*/true);  // JSON Lines: one object per update
    } else if (tty) {
      const int filled = static_cast<int>(30 * job.progress());
      std::cout << "\r"
                << absl::StrFormat("%s [%s%s] %3.0f%% %s", job.id(), std::string(filled, '#'),
                                   std::string(30 - filled, ' '), 100 * job.progress(),
                                   v1::Job::State_Name(job.state()))
                << std::flush;
    } else {
      std::cout << JobLine(job) << "\n";
    }
  }
  if (tty && !context.json) std::cout << "\n";
  grpc::Status s = reader->Finish();
  if (!s.ok()) return Failed(s);
  // Non-zero unless the job succeeded, so that a pipeline can gate on watch.
  if (job.state() != v1::Job::SUCCEEDED) {
    const auto code = static_cast<grpc::StatusCode>(job.error_code() != 0 ? job.error_code()
                                                    : job.state() == v1::Job::CANCELLED
                                                        ? grpc::StatusCode::CANCELLED
                                                        : grpc::StatusCode::UNKNOWN);
    return Failed(grpc::Status(
        code, absl::StrFormat("job %s ended %s%s", job.id(), v1::Job::State_Name(job.state()),
                              job.error_message().empty() ? "" : ": " + job.error_message())));
  }
  return kDone;
}

Exit Cancel(const VerbContext& context) {
  if (absl::GetFlag(FLAGS_job).empty()) return Usage("--job=ID is required");
  v1::CancelJobRequest req;
  req.set_job_id(absl::GetFlag(FLAGS_job));
  v1::Job job;
  grpc::Status s = context.stub->CancelJob(context.call, req, &job);
  if (!s.ok()) return Failed(s);
  context.json ? PrintJson(job) : void(std::cout << JobLine(job) << "\n");
  return kDone;
}

}  // namespace job_control

Verb WatchVerb() {
  return {"watch", "a job's progress until it ends", {"job"}, nullptr, job_control::Watch};
}

Verb CancelVerb() { return {"cancel", "stop a job", {"job"}, nullptr, job_control::Cancel}; }

}  // namespace superweight::client
