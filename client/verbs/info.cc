// info: the server's build and job store.
#include <iostream>

#include "absl/strings/str_format.h"
#include "client/common.h"
#include "client/verb.h"

namespace superweight::client {
namespace info {  // one per verb: verbs compile together

Exit Run(const VerbContext& context) {
  v1::ServerInfo info;
  grpc::Status s = context.stub->GetServerInfo(context.call, v1::GetServerInfoRequest(), &info);
  if (!s.ok()) return Failed(s);
  if (context.json) {
    PrintJson(info);
    return kDone;
  }
  std::cout << absl::StrFormat("superweightd %s (git %s), CPU class %s", info.version(),
                               info.git_revision(), info.cpu_class());
  if (info.cpu_class() != info.cpu_class_detected()) {
    std::cout << " (capped; the CPU's is " << info.cpu_class_detected() << ")";
  }
  std::cout << ", job store " << info.job_store();
  if (!info.replica().empty()) std::cout << " (replica " << info.replica() << ")";
  std::cout << "\n";
  return kDone;
}

}  // namespace info

Verb InfoVerb() {
  return {"info",
          "the server's build (version, git revision, CPU class) and job store",
          {},
          nullptr,
          info::Run};
}

}  // namespace superweight::client
