#include "server/jobs/job_runner.h"

#include <iostream>
#include <new>

#include "absl/strings/str_cat.h"
#include "engine/runtime/forward.h"

namespace superweight::server {
namespace {

// Not OK where a model the job read was changed in place while it ran: whatever the job computed
// from it is void.
absl::Status ModelFilesUnchanged(const JobWork& w) {
  for (const Model* m : {w.model.get(), w.reference.get()}) {
    if (m == nullptr) continue;
    if (absl::Status s = m->CheckFilesUnchanged(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<absl::StatusOr<v1::Job>> RunJobBatch(const JobKind& kind,
                                                 const std::vector<JobRun>& batch, Metrics* metrics,
                                                 const std::string& log_name) {
  std::vector<absl::StatusOr<v1::Job>> outcomes(batch.size(), absl::UnknownError("not run"));
  std::vector<bool> decided(batch.size(), false);  // published, or discarded already
  absl::Status thrown;
  try {
    std::vector<JobRun> ready;
    std::vector<size_t> ready_index;
    for (size_t i = 0; i < batch.size(); ++i) {
      JobWork& work = *batch[i].work;
      if (work.load_inputs) {
        const absl::Status loaded = work.load_inputs(work);
        work.load_inputs = nullptr;
        if (!loaded.ok()) {
          outcomes[i] = loaded;
          decided[i] = true;
          continue;
        }
      }
      ready.push_back(batch[i]);
      ready_index.push_back(i);
    }
    std::vector<absl::StatusOr<v1::Job>> results = kind.Run(ready, metrics);
    ReleasePassBuffers();  // kept for the run's next pass; the server may idle now
    for (size_t r = 0; r < ready.size(); ++r) {
      JobWork& work = *ready[r].work;
      absl::Status status = ModelFilesUnchanged(work);
      if (status.ok() && r >= results.size()) {
        status = absl::InternalError("the job's kind returned no result for it");
      }
      if (status.ok()) status = results[r].status();
      // A cancel that lands before the job is finished wins, even over a computed result: what
      // the job wrote is not published.
      if (status.ok() && ready[r].cancelled->load()) {
        status = absl::CancelledError("cancelled before its result was published");
      }
      if (status.ok() && ready[r].may_publish) status = ready[r].may_publish();
      if (status.ok()) status = kind.Publish(work);
      if (!status.ok()) {
        kind.Discard(work);
        outcomes[ready_index[r]] = status;
        decided[ready_index[r]] = true;
        continue;
      }
      outcomes[ready_index[r]] = std::move(results[r]);
      decided[ready_index[r]] = true;
    }
    return outcomes;
  } catch (const std::bad_alloc&) {
    thrown = absl::ResourceExhaustedError("the job ran out of memory");
  } catch (const std::exception& ex) {
    thrown = absl::InternalError(absl::StrCat("the job failed unexpectedly: ", ex.what()));
  } catch (...) {
    thrown = absl::InternalError("the job failed unexpectedly");
  }
  ReleasePassBuffers();
  std::cerr << "superweightd: job " << log_name << ": " << thrown.message() << "\n";
  for (size_t i = 0; i < batch.size(); ++i) {
    if (decided[i]) continue;
    kind.Discard(*batch[i].work);
    outcomes[i] = thrown;
  }
  return outcomes;
}

}  // namespace superweight::server
