// jobs: the server's jobs, one line each.
#include <iostream>

#include "absl/flags/flag.h"
#include "client/common.h"
#include "client/verb.h"

namespace superweight::client {
namespace jobs {  // one per verb: verbs compile together

Exit Run(const VerbContext& context) {
  v1::ListJobsRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  v1::ListJobsResponse resp;
  grpc::Status s = context.stub->ListJobs(context.call, req, &resp);
  if (!s.ok()) return Failed(s);
  if (context.json) {
    PrintJson(resp);
  } else {
    for (const auto& j : resp.jobs()) std::cout << JobLine(j) << "\n";
  }
  return kDone;
}

}  // namespace jobs

Verb JobsVerb() {
  return {"jobs", "the server's jobs (--model: only that model's)", {"model"}, nullptr, jobs::Run};
}

}  // namespace superweight::client
