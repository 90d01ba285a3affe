// A batch of claimed jobs run through their kind, the same whichever store they came from: the
// inputs they name read, the kind's run, the checks before a result counts (models unchanged,
// not cancelled) and its publication.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/jobs/job_kind.h"
#include "server/metrics.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::server {

// Per job of `batch`, in order: a Job holding only its result, published where its kind
// publishes, or why it did not succeed (CANCELLED where it was cancelled; what it wrote aside
// discarded). Nothing thrown escapes: a throw fails the whole batch, logged under `log_name`.
std::vector<absl::StatusOr<v1::Job>> RunJobBatch(const JobKind& kind,
                                                 const std::vector<JobRun>& batch, Metrics* metrics,
                                                 const std::string& log_name);

}  // namespace superweight::server
