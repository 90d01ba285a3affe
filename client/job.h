// The job-backed verbs (locate, score, ablate, quantize, check): a call that waits for the
// answer, or on a terminal submits the job and follows it with a progress bar, or with --no_wait
// prints the job id; and the interrupt that cancels a job being followed.
#ifndef SUPERWEIGHT_CLIENT_JOB_H_
#define SUPERWEIGHT_CLIENT_JOB_H_

#include <signal.h>

#include <iostream>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "client/common.h"
#include "client/verb.h"
#include "grpcpp/grpcpp.h"
#include "superweight/v1/superweight.grpc.pb.h"

namespace superweight::client {

// SIGINT and SIGTERM, blocked in every thread (main blocks them before gRPC starts any), are
// taken by a thread started here: the job being followed is cancelled, then the client exits 130.
void WatchForInterrupts(sigset_t signals, Stub* stub, std::string token);

// Follows job `id` with a progress bar on stderr until it ends, as the job an interrupt cancels;
// OK when it succeeded.
grpc::Status FollowUntilEnd(const VerbContext& context, const std::string& id, v1::Job* job);

// --bf16.
v1::Precision PrecisionFlag();

// Makes the job's call (a Stub method, such as &Stub::Locate) as the context says. Returns the
// exit when the verb is done (an error, or --no_wait's job id printed), nullopt when `resp`
// holds a result to print; `result_of` (such as &v1::Job::locate) takes it from a followed job.
template <typename Request, typename Response, typename Result>
std::optional<Exit> RunJob(const VerbContext& context,
                           grpc::Status (Stub::*call)(grpc::ClientContext*, const Request&,
                                                      Response*),
                           Request& req, Response& resp,
                           const Result& (v1::Job::*result_of)() const) {
  req.set_async(context.progress || context.no_wait);
  req.set_request_id(absl::GetFlag(FLAGS_request_id));
  grpc::Status s = (context.stub->*call)(context.call, req, &resp);
  if (!s.ok()) return Failed(s);
  if (context.no_wait) {
    if (context.json) {
      PrintJson(resp);  // {"job_id": ...}: the response holds no result yet
    } else {
      std::cout << resp.job_id() << "\n";
    }
    return kDone;
  }
  if (context.progress) {
    v1::Job job;
    s = FollowUntilEnd(context, resp.job_id(), &job);
    if (!s.ok()) return Failed(s);
    *resp.mutable_result() = (job.*result_of)();
  }
  return std::nullopt;
}

}  // namespace superweight::client

#endif  // SUPERWEIGHT_CLIENT_JOB_H_
