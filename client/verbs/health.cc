// health: grpc.health.v1.Health/Check for the whole server, which needs no token.
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "client/common.h"
#include "client/verb.h"
#include "grpcpp/generic/generic_stub.h"

namespace superweight::client {
namespace health {  // one per verb: verbs compile together

Exit Run(const VerbContext& context) {
  // The request (service "") encodes as zero bytes; the response's only field is status
  // (1: SERVING).
  grpc::GenericStub generic(context.channel);
  grpc::ByteBuffer request, response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  generic.UnaryCall(context.call, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) {
                      std::lock_guard<std::mutex> lock(mu);
                      status = s;
                      done = true;
                      cv.notify_one();
                    });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  if (!status.ok()) return Failed(status);
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const auto& sl : slices)
      bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  const bool serving = bytes.size() == 2 && bytes[0] == 0x08 && bytes[1] == 0x01;
  std::cout << (serving ? "SERVING" : "NOT_SERVING") << "\n";
  return serving ? kDone : kFailed;
}

}  // namespace health

Verb HealthVerb() {
  return {"health",
          "whether the server is serving (gRPC health checking; needs no token)",
          {},
          nullptr,
          health::Run};
}

}  // namespace superweight::client
