// models: the models the server can open.
#include <iostream>

#include "absl/strings/str_format.h"
#include "client/common.h"
#include "client/verb.h"

namespace superweight::client {
namespace models {  // one per verb: verbs compile together

Exit Run(const VerbContext& context) {
  v1::ListModelsResponse resp;
  grpc::Status s = context.stub->ListModels(context.call, v1::ListModelsRequest(), &resp);
  if (!s.ok()) return Failed(s);
  if (context.json) {
    PrintJson(resp);
    return kDone;
  }
  for (const auto& m : resp.models()) {
    std::cout << absl::StrFormat(
        "%-45s %-12s %-8s %3d layers  hidden %-5d down_proj %-5s %8.1f MB\n", m.name(), m.format(),
        m.architecture(), m.layers(), m.hidden_size(), m.weight_dtype(),
        m.mapped_bytes() / 1048576.0);
  }
  return kDone;
}

}  // namespace models

Verb ModelsVerb() {
  return {"models", "the models under the server's --model_root", {}, nullptr, models::Run};
}

}  // namespace superweight::client
