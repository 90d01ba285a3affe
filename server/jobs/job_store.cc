#include "server/jobs/job_store.h"

#include <cctype>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/util/utf8_prefix.h"

namespace superweight::server {

int64_t UnixNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string JobStateName(v1::Job::State state) {
  std::string name = v1::Job::State_Name(state);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

absl::Status CheckRequestId(const std::string& request_id) {
  constexpr size_t kMaxRequestId = 128;
  bool printable = true;
  for (char c : request_id) printable = printable && c >= 0x21 && c <= 0x7e;
  if (request_id.size() <= kMaxRequestId && printable) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("request_id: up to %d printable ASCII characters, no spaces (%d bytes given)",
                      kMaxRequestId, request_id.size()));
}

absl::Status SameRequest(const v1::Job& existing, const JobSubmission& submission) {
  if (existing.kind() == submission.kind && existing.model() == submission.model) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "request_id ", submission.request_id, " was given before to ", existing.id(), ", a ",
      existing.kind(), " job on ", Utf8Prefix(existing.model(), 100),
      ": a request_id names one request (retry with the same request, or use a new id)"));
}

}  // namespace superweight::server
