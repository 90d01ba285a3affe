// The registry of job kinds: a new kind is a file of its own and a line here.
#include "server/jobs/job_kind.h"

namespace superweight::server {

const JobKind* FindJobKind(absl::string_view name) {
  for (const JobKind* kind : {&LocateJobKind(), &ScoreJobKind(), &AblateJobKind()}) {
    if (kind->name() == name) return kind;
  }
  return nullptr;
}

}  // namespace superweight::server
