#include "server/jobs/job_queue.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "server/jobs/job_runner.h"

namespace superweight::server {
namespace {

// Job ids count up to here, then start again at 1, skipping ids in use.
constexpr uint64_t kMaxJobCounter = 1'000'000'000'000;

// How often an idle worker applies the retention, so that jobs age out without new ones.
constexpr auto kPruneInterval = std::chrono::minutes(1);

// What a finished or cancelled job freed goes back to the system: its many small allocations
// (task texts, token vectors) sit in malloc's arenas otherwise, and the server's memory would
// stay at its peak.
void ReleaseFreedMemory() { ::malloc_trim(0); }

// For a waiter whose job the worker pruned while it waited.
absl::Status PrunedError(const std::string& id) {
  return absl::NotFoundError(
      absl::StrFormat("job '%s' finished and was dropped by the retention policy", id));
}

// When a finished job finished, for its age and order; a record without times (written by
// hand, or by an old server) counts as the oldest, and 0 means its age is unknown.
int64_t FinishedAtMs(const v1::Job& job) {
  return job.finished_unix_ms() != 0 ? job.finished_unix_ms() : job.created_unix_ms();
}

}  // namespace

JobQueue::JobQueue(std::string state_dir, int max_queued, int max_batch, JobRetention retention,
                   Metrics* metrics)
    : state_dir_(std::move(state_dir)),
      max_queued_(max_queued),
      max_batch_(max_batch),
      retention_(retention),
      metrics_(metrics) {
  if (!state_dir_.empty()) {
    // A record written and removed: the directory takes them, or the server must not start.
    // The first failure's errno is the one reported.
    int error = 0;
    for (const std::string& dir : {state_dir_, state_dir_ + "/jobs"}) {
      if (error == 0 && ::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) error = errno;
    }
    const std::string probe = state_dir_ + "/jobs/.write-test";
    if (error == 0) {
      const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) {
        error = errno;
      } else {
        if (::write(fd, "ok", 2) != 2) error = errno != 0 ? errno : EIO;
        if (::close(fd) != 0 && error == 0) error = errno;
        if (::unlink(probe.c_str()) != 0 && error == 0) error = errno;
      }
    }
    if (error != 0) {
      storage_status_ = absl::FailedPreconditionError(absl::StrCat(
          "--state_dir ", state_dir_, " cannot store job records: ", std::strerror(error)));
    } else {
      LoadPersisted();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    Prune();
  }
  worker_ = std::thread([this] { WorkerLoop(); });
}

JobQueue::~JobQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& [id, e] : jobs_) e->cancelled = true;
  }
  changed_.notify_all();
  worker_.join();
}

void JobQueue::OnHealthChange(std::function<void(bool)> handler) {
  std::lock_guard<std::mutex> lock(mu_);
  on_storage_failure_ = std::move(handler);
}

void JobQueue::Persist(v1::Job* job) {
  if (state_dir_.empty()) return;
  // Written aside and renamed, so a crash never leaves half a record.
  const std::string path = state_dir_ + "/jobs/" + job->id() + ".pb";
  bool written;
  {
    std::ofstream f(path + ".tmp", std::ios::binary | std::ios::trunc);
    written = f && job->SerializeToOstream(&f);
    f.close();
    written = written && !f.fail();
  }
  if (written && std::rename((path + ".tmp").c_str(), path.c_str()) == 0) return;
  const std::string why = std::strerror(errno);
  std::remove((path + ".tmp").c_str());
  job->set_storage_error(absl::StrCat("cannot store the job record in ", state_dir_, ": ", why));
  std::cerr << "superweightd: job " << job->id() << ": " << job->storage_error() << "\n";
  metrics_->RecordStoreFailure();
  if (!storage_failed_) {
    storage_failed_ = true;
    if (on_storage_failure_) on_storage_failure_(false);
  }
}

void JobQueue::Prune() {
  std::vector<std::pair<int64_t, std::string>> finished;  // (finished at, id), oldest first
  for (const auto& [id, e] : jobs_) {
    if (Finished(e->job)) finished.emplace_back(FinishedAtMs(e->job), id);
  }
  std::sort(finished.begin(), finished.end());
  size_t beyond_count = 0;
  if (retention_.max_finished > 0 &&
      finished.size() > static_cast<size_t>(retention_.max_finished)) {
    beyond_count = finished.size() - retention_.max_finished;
  }
  const int64_t cutoff_ms = UnixNowMs() - retention_.max_age.count();
  int pruned = 0;
  for (size_t i = 0; i < finished.size(); ++i) {
    const auto& [finished_ms, id] = finished[i];
    const bool too_old =
        retention_.max_age.count() > 0 && finished_ms != 0 && finished_ms < cutoff_ms;
    if (i >= beyond_count && !too_old) continue;
    if (!jobs_.at(id)->job.request_id().empty())
      by_request_id_.erase(jobs_.at(id)->job.request_id());
    jobs_.erase(id);
    ++pruned;
    if (state_dir_.empty()) continue;
    const std::string path = state_dir_ + "/jobs/" + id + ".pb";
    if (std::remove(path.c_str()) != 0 && errno != ENOENT) {  // it comes back at a restart
      std::cerr << "superweightd: cannot remove pruned job record " << path << ": "
                << std::strerror(errno) << "\n";
    }
  }
  if (pruned > 0) {
    metrics_->RecordJobsPruned(pruned);
    PersistNextId();
  }
  metrics_->SetJobsStored(static_cast<double>(jobs_.size()));
}

void JobQueue::PersistNextId() {
  if (state_dir_.empty()) return;
  const std::string path = state_dir_ + "/next_job_id";
  {
    std::ofstream f(path + ".tmp", std::ios::binary | std::ios::trunc);
    f << next_id_ << "\n";
  }
  if (std::rename((path + ".tmp").c_str(), path.c_str()) != 0) {  // ids may repeat after restart
    std::cerr << "superweightd: cannot store " << path << ": " << std::strerror(errno) << "\n";
    std::remove((path + ".tmp").c_str());
  }
}

void JobQueue::LoadPersisted() {
  {
    std::ifstream f(state_dir_ + "/next_job_id");
    std::stringstream text;
    text << f.rdbuf();
    uint64_t n = 0;
    if (f && absl::SimpleAtoi(absl::StripAsciiWhitespace(text.str()), &n) && n < kMaxJobCounter) {
      next_id_ = std::max(next_id_, n);
    }
  }
  const std::string dir = state_dir_ + "/jobs";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.push_back(e->d_name);
  ::closedir(d);
  for (const std::string& name : names) {
    if (name.size() < 4 || name.substr(name.size() - 3) != ".pb") continue;
    std::ifstream f(dir + "/" + name, std::ios::binary);
    auto entry = std::make_unique<Entry>();
    const char* why = nullptr;
    if (!entry->job.ParseFromIstream(&f)) {
      why = "not a job record";
    } else if (entry->job.id().empty() || entry->job.id() + ".pb" != name) {
      why = "its id does not match its file name";
    } else if (jobs_.count(entry->job.id()) != 0) {
      why = "a duplicate id";
    }
    if (why != nullptr) {  // kept, aside, for a person to look at
      ::mkdir((dir + "/unreadable").c_str(), 0755);
      std::rename((dir + "/" + name).c_str(), (dir + "/unreadable/" + name).c_str());
      std::cerr << "superweightd: stored job " << name << " is unreadable (" << why
                << "); moved to jobs/unreadable/\n";
      metrics_->RecordUnreadableJob();
      continue;
    }
    if (!Finished(entry->job)) {  // it was queued or running when the server stopped
      entry->job.set_state(v1::Job::FAILED);
      entry->job.set_error_code(static_cast<int>(absl::StatusCode::kAborted));
      entry->job.set_error_message("the server stopped while this job was queued or running");
      entry->job.set_finished_unix_ms(UnixNowMs());
      Persist(&entry->job);
    }
    // New ids count on past every stored one that reads as a counter value; Submit also skips
    // any id in use, so no counter value (wrapped or not) can replace a stored record.
    const std::string& id = entry->job.id();
    uint64_t n = 0;
    if (id.rfind("job-", 0) == 0 && absl::SimpleAtoi(id.substr(4), &n) && n < kMaxJobCounter) {
      next_id_ = std::max(next_id_, n + 1);
    }
    if (!entry->job.request_id().empty()) by_request_id_[entry->job.request_id()] = id;
    jobs_[id] = std::move(entry);
  }
}

absl::StatusOr<std::string> JobQueue::Submit(JobSubmission submission) {
  const std::string& kind = submission.kind;
  if (FindJobKind(kind) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no job kind '", kind, "'"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!submission.request_id.empty()) {
    auto seen = by_request_id_.find(submission.request_id);
    if (seen != by_request_id_.end()) {
      if (absl::Status s = SameRequest(jobs_.at(seen->second)->job, submission); !s.ok()) return s;
      return seen->second;
    }
  }
  if (static_cast<int>(queue_.size()) >= max_queued_) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the job queue is full (%d jobs waiting)", queue_.size()));
  }
  auto entry = std::make_unique<Entry>();
  std::string id;
  do {
    if (next_id_ >= kMaxJobCounter) next_id_ = 1;
    id = absl::StrFormat("job-%06d", next_id_++);
  } while (jobs_.count(id) != 0);
  entry->job.set_id(id);
  entry->job.set_kind(kind);
  entry->job.set_model(submission.model);
  entry->job.set_request_id(submission.request_id);
  entry->job.set_state(v1::Job::QUEUED);
  entry->job.set_created_unix_ms(UnixNowMs());
  entry->work = std::move(submission.work);
  if (!submission.request_id.empty()) by_request_id_[submission.request_id] = id;
  Persist(&entry->job);
  jobs_[id] = std::move(entry);
  queue_.push_back(id);
  metrics_->SetQueueDepth(queue_.size());
  metrics_->SetJobsStored(static_cast<double>(jobs_.size()));
  changed_.notify_all();
  return id;
}

absl::StatusOr<v1::Job> JobQueue::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrFormat("no job '%s'", id));
  return it->second->job;
}

absl::StatusOr<v1::Job> JobQueue::Cancel(const std::string& id) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrFormat("no job '%s'", id));
  Entry* e = it->second.get();
  if (Finished(e->job)) return e->job;
  e->cancelled = true;
  e->cancelled_by_client = true;
  if (e->job.state() == v1::Job::QUEUED) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
    metrics_->SetQueueDepth(queue_.size());
    e->job.set_state(v1::Job::CANCELLED);
    e->job.set_finished_unix_ms(UnixNowMs());
    e->work = JobWork();
    Persist(&e->job);
    changed_.notify_all();
    v1::Job cancelled = e->job;
    lock.unlock();
    ReleaseFreedMemory();
    return cancelled;
  }
  // Running: the forward pass notices within one layer. Found again by id after each wake: the
  // worker may prune it once it has finished.
  changed_.wait_for(lock, std::chrono::seconds(5), [&] {
    it = jobs_.find(id);
    return it == jobs_.end() || Finished(it->second->job);
  });
  if (it == jobs_.end()) return PrunedError(id);
  return it->second->job;
}

absl::StatusOr<std::vector<v1::Job>> JobQueue::List(const std::string& model, int limit) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::Job> out;
  for (auto it = jobs_.rbegin(); it != jobs_.rend() && static_cast<int>(out.size()) < limit; ++it) {
    if (model.empty() || it->second->job.model() == model) out.push_back(it->second->job);
  }
  return out;
}

absl::StatusOr<v1::Job> JobQueue::WaitForChange(const std::string& id, const v1::Job& seen,
                                                int timeout_ms) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrFormat("no job '%s'", id));
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    it = jobs_.find(id);  // again: the worker may have pruned it meanwhile
    return stopping_ || it == jobs_.end() || it->second->job.state() != seen.state() ||
           it->second->job.progress() != seen.progress();
  });
  if (it == jobs_.end()) return PrunedError(id);
  return it->second->job;
}

// A model file shortened under a running job makes the rest of its work void: stop it early (its
// end is then reported from ModelFilesUnchanged, not as a cancellation).
void JobQueue::SetProgress(Entry* e, double p) {
  const JobWork& w = e->work;
  if ((w.model != nullptr && w.model->MappingFaulted()) ||
      (w.reference != nullptr && w.reference->MappingFaulted())) {
    e->cancelled.store(true);
  }
  std::lock_guard<std::mutex> lock(mu_);
  e->job.set_progress(static_cast<float>(p));
  changed_.notify_all();
}

void JobQueue::Finish(Entry* e, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (status.ok()) {
    e->job.set_state(v1::Job::SUCCEEDED);
    e->job.set_progress(1.f);
  } else if (status.code() == absl::StatusCode::kCancelled && stopping_ &&
             !e->cancelled_by_client) {
    // Stopped by the server's own shutdown, not by anyone who asked: as after a crash.
    e->job.set_state(v1::Job::FAILED);
    e->job.set_error_code(static_cast<int>(absl::StatusCode::kAborted));
    e->job.set_error_message("the server stopped (SIGTERM or SIGINT) while this job ran");
  } else if (status.code() == absl::StatusCode::kCancelled) {
    e->job.set_state(v1::Job::CANCELLED);
  } else {
    e->job.set_state(v1::Job::FAILED);
    e->job.set_error_code(static_cast<int>(status.code()));
    e->job.set_error_message(std::string(status.message()));
  }
  e->job.set_finished_unix_ms(UnixNowMs());
  e->work = JobWork();  // drop the model handle and inputs
  Persist(&e->job);
  metrics_->RecordJob(e->job.kind(), JobStateName(e->job.state()),
                      (e->job.finished_unix_ms() - e->started_unix_ms) / 1000.0);
  changed_.notify_all();
}

void JobQueue::WorkerLoop() {
  while (true) {
    std::vector<Entry*> batch;
    const JobKind* kind = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (
          !changed_.wait_for(lock, kPruneInterval, [&] { return stopping_ || !queue_.empty(); })) {
        Prune();
      }
      if (stopping_) return;
      Entry* first = jobs_.at(queue_.front()).get();
      queue_.pop_front();
      batch.push_back(first);
      kind = FindJobKind(first->job.kind());
      // Queued jobs that may share the first's run (Score: single sequences of one model).
      size_t tokens = first->work.tokens.size();
      for (auto it = queue_.begin();
           it != queue_.end() && static_cast<int>(batch.size()) < max_batch_;) {
        Entry* e = jobs_.at(*it).get();
        if (e->job.kind() == first->job.kind() && kind->Joins(first->work, e->work, tokens)) {
          tokens += e->work.tokens.size();
          batch.push_back(e);
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      for (Entry* e : batch) {
        e->job.set_state(v1::Job::RUNNING);
        e->started_unix_ms = UnixNowMs();
        e->job.set_started_unix_ms(e->started_unix_ms);
      }
      metrics_->SetQueueDepth(queue_.size());
      changed_.notify_all();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Entry* e : batch) Persist(&e->job);
    }
    RunBatch(*kind, batch);
    ReleaseFreedMemory();
    std::lock_guard<std::mutex> lock(mu_);
    Prune();
  }
}

// Whatever a job throws ends that job (and the others of its batch) as FAILED; the worker, and
// so the server, goes on.
void JobQueue::RunBatch(const JobKind& kind, const std::vector<Entry*>& batch) {
  std::vector<JobRun> runs;
  for (Entry* e : batch) {
    runs.push_back({&e->work, &e->cancelled, [this, e](double p) { SetProgress(e, p); }, nullptr});
  }
  std::vector<absl::StatusOr<v1::Job>> outcomes =
      RunJobBatch(kind, runs, metrics_, batch[0]->job.id());
  for (size_t i = 0; i < batch.size(); ++i) {
    Entry* e = batch[i];
    if (!outcomes[i].ok()) {
      Finish(e, outcomes[i].status());
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      e->job.MergeFrom(*outcomes[i]);
    }
    Finish(e, absl::OkStatus());
  }
}

}  // namespace superweight::server
