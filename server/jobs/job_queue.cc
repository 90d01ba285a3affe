#include "server/jobs/job_queue.h"

#include <dirent.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/analysis/score.h"
#include "server/convert.h"
#include "server/known_directory.h"

namespace superweight::server {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string StateName(v1::Job::State s) {
  std::string n = v1::Job::State_Name(s);
  for (char& c : n) c = static_cast<char>(std::tolower(c));
  return n;
}

// Sequences of at most this many tokens in all go into one batched pass.
constexpr size_t kMaxBatchTokens = 4096;

}  // namespace

JobQueue::JobQueue(std::string state_dir, int max_queued, int max_batch, Metrics* metrics)
    : state_dir_(std::move(state_dir)),
      max_queued_(max_queued),
      max_batch_(max_batch),
      metrics_(metrics) {
  if (!state_dir_.empty()) {
    ::mkdir(state_dir_.c_str(), 0755);
    ::mkdir((state_dir_ + "/jobs").c_str(), 0755);
    LoadPersisted();
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

bool JobQueue::Finished(const v1::Job& job) {
  return job.state() == v1::Job::SUCCEEDED || job.state() == v1::Job::FAILED ||
         job.state() == v1::Job::CANCELLED;
}

void JobQueue::Persist(const v1::Job& job) const {
  if (state_dir_.empty()) return;
  // Written aside and renamed, so a crash never leaves half a record.
  const std::string path = state_dir_ + "/jobs/" + job.id() + ".pb";
  {
    std::ofstream f(path + ".tmp", std::ios::binary | std::ios::trunc);
    job.SerializeToOstream(&f);
  }
  std::rename((path + ".tmp").c_str(), path.c_str());
}

void JobQueue::LoadPersisted() {
  DIR* d = ::opendir((state_dir_ + "/jobs").c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 4 || name.substr(name.size() - 3) != ".pb") continue;
    std::ifstream f(state_dir_ + "/jobs/" + name, std::ios::binary);
    auto entry = std::make_unique<Entry>();
    if (!entry->job.ParseFromIstream(&f) || entry->job.id().empty()) continue;
    if (!Finished(entry->job)) {  // it was queued or running when the server stopped
      entry->job.set_state(v1::Job::FAILED);
      entry->job.set_error_code(static_cast<int>(absl::StatusCode::kAborted));
      entry->job.set_error_message("the server stopped while this job was queued or running");
      entry->job.set_finished_unix_ms(NowMs());
      Persist(entry->job);
    }
    uint64_t n = 0;
    if (std::sscanf(entry->job.id().c_str(), "job-%lu", &n) == 1)
      next_id_ = std::max(next_id_, n + 1);
    jobs_[entry->job.id()] = std::move(entry);
  }
  ::closedir(d);
}

absl::StatusOr<std::string> JobQueue::Submit(const std::string& kind, const std::string& model_name,
                                             JobWork work) {
  if (kind != "locate" && kind != "score" && kind != "ablate") {
    return absl::InvalidArgumentError(absl::StrCat("no job kind '", kind, "'"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int>(queue_.size()) >= max_queued_) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the job queue is full (%d jobs waiting)", queue_.size()));
  }
  auto entry = std::make_unique<Entry>();
  const std::string id = absl::StrFormat("job-%06d", next_id_++);
  entry->job.set_id(id);
  entry->job.set_kind(kind);
  entry->job.set_model(model_name);
  entry->job.set_state(v1::Job::QUEUED);
  entry->job.set_created_unix_ms(NowMs());
  entry->work = std::move(work);
  Persist(entry->job);
  jobs_[id] = std::move(entry);
  queue_.push_back(id);
  metrics_->SetQueueDepth(queue_.size());
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
  if (e->job.state() == v1::Job::QUEUED) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
    metrics_->SetQueueDepth(queue_.size());
    e->job.set_state(v1::Job::CANCELLED);
    e->job.set_finished_unix_ms(NowMs());
    e->work = JobWork();
    Persist(e->job);
    changed_.notify_all();
    return e->job;
  }
  // Running: the forward pass notices within one layer.
  changed_.wait_for(lock, std::chrono::seconds(5), [&] { return Finished(e->job); });
  return e->job;
}

std::vector<v1::Job> JobQueue::List(const std::string& model, int limit) const {
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
  const Entry* e = it->second.get();
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return stopping_ || e->job.state() != seen.state() || e->job.progress() != seen.progress();
  });
  return e->job;
}

void JobQueue::SetProgress(Entry* e, double p) {
  std::lock_guard<std::mutex> lock(mu_);
  e->job.set_progress(static_cast<float>(p));
  changed_.notify_all();
}

void JobQueue::Finish(Entry* e, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (status.ok()) {
    e->job.set_state(v1::Job::SUCCEEDED);
    e->job.set_progress(1.f);
  } else if (status.code() == absl::StatusCode::kCancelled) {
    e->job.set_state(v1::Job::CANCELLED);
  } else {
    e->job.set_state(v1::Job::FAILED);
    e->job.set_error_code(static_cast<int>(status.code()));
    e->job.set_error_message(std::string(status.message()));
  }
  e->job.set_finished_unix_ms(NowMs());
  e->work = JobWork();  // drop the model handle and inputs
  Persist(e->job);
  metrics_->RecordJob(e->job.kind(), StateName(e->job.state()),
                      (e->job.finished_unix_ms() - e->started_unix_ms) / 1000.0);
  changed_.notify_all();
}

void JobQueue::WorkerLoop() {
  while (true) {
    std::vector<Entry*> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      Entry* first = jobs_.at(queue_.front()).get();
      queue_.pop_front();
      batch.push_back(first);
      // Batch queued single-sequence scores on the same model and precision.
      if (first->job.kind() == "score" && first->work.window == 0) {
        size_t tokens = first->work.tokens.size();
        for (auto it = queue_.begin();
             it != queue_.end() && static_cast<int>(batch.size()) < max_batch_;) {
          Entry* e = jobs_.at(*it).get();
          if (e->job.kind() == "score" && e->work.window == 0 &&
              e->work.model == first->work.model && e->work.precision == first->work.precision &&
              tokens + e->work.tokens.size() <= kMaxBatchTokens) {
            tokens += e->work.tokens.size();
            batch.push_back(e);
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
      }
      for (Entry* e : batch) {
        e->job.set_state(v1::Job::RUNNING);
        e->started_unix_ms = NowMs();
      }
      metrics_->SetQueueDepth(queue_.size());
      changed_.notify_all();
    }
    for (Entry* e : batch) Persist(e->job);
    RunBatch(batch);
  }
}

// Whatever a job throws ends that job (and the others of its batch) as FAILED; the worker, and
// so the server, goes on.
void JobQueue::RunBatch(const std::vector<Entry*>& batch) {
  absl::Status thrown;
  try {
    const std::string& kind = batch[0]->job.kind();
    if (kind == "locate") {
      RunLocate(batch[0]);
    } else if (kind == "ablate") {
      RunAblate(batch[0]);
    } else {
      RunScoreBatch(batch);
    }
    return;
  } catch (const std::bad_alloc&) {
    thrown = absl::ResourceExhaustedError("the job ran out of memory");
  } catch (const std::exception& ex) {
    thrown = absl::InternalError(absl::StrCat("the job failed unexpectedly: ", ex.what()));
  } catch (...) {
    thrown = absl::InternalError("the job failed unexpectedly");
  }
  std::cerr << "superweightd: job " << batch[0]->job.id() << ": " << thrown.message() << "\n";
  for (Entry* e : batch) {
    bool finished;
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished = Finished(e->job);
    }
    if (!finished) Finish(e, thrown);
  }
}

void JobQueue::RunLocate(Entry* e) {
  JobWork& w = e->work;
  w.locate.cancelled = &e->cancelled;
  w.locate.on_progress = [this, e](double p) { SetProgress(e, p); };
  metrics_->RecordBatch(1, static_cast<int64_t>(w.tokens.size()));
  auto r = Locate(*w.model, w.tokens, w.locate);
  if (!r.ok()) return Finish(e, r.status());
  v1::LocateResult result = ToProto(*r);
  result.mutable_token_ids()->Add(w.tokens.begin(), w.tokens.end());
  result.set_known_model(w.known_model);
  for (auto& sw : *result.mutable_super_weights()) {
    for (const auto& k : KnownSuperWeights()) {
      if (k.model == w.known_model && k.layer == sw.coordinate().layer() &&
          k.row == sw.coordinate().row() && k.col == sw.coordinate().col()) {
        sw.set_known_match(k.model);
      }
    }
  }
  const int confirmed = r->ConfirmedCount();
  // perplexity_intact is 0 when no confirmation ran (skipped, or no text to measure with).
  std::string summary;
  if (r->candidates.empty()) {
    summary = "no layer spikes: no super weight";
  } else if (r->perplexity_intact <= 0) {
    summary = absl::StrFormat(
        "%d candidate%s, not confirmed: confirmation skipped, so none counts as a super weight",
        r->candidates.size(), r->candidates.size() == 1 ? "" : "s");
  } else if (confirmed == 0) {
    summary = "spikes found, but zeroing none of them hurts: no confirmed super weight";
  } else {
    summary = absl::StrFormat("%d super weight%s", confirmed, confirmed == 1 ? "" : "s");
  }
  for (const auto& s : r->candidates) {
    if (!s.confirmed) continue;
    summary += absl::StrFormat("; layers[%d].mlp.down_proj.weight[%d, %d] = %.4g", s.layer, s.row,
                               s.col, s.weight);
    if (r->perplexity_intact > 0) {
      summary += absl::StrFormat(" (zeroed: perplexity %.4g -> %.4g)", r->perplexity_intact,
                                 s.perplexity_zeroed);
    }
  }
  result.set_summary(summary);
  {
    std::lock_guard<std::mutex> lock(mu_);
    *e->job.mutable_locate() = std::move(result);
  }
  Finish(e, absl::OkStatus());
}

void JobQueue::RunAblate(Entry* e) {
  JobWork& w = e->work;
  AblateOptions& options = w.ablate;
  options.harness.cancelled = &e->cancelled;
  v1::AblateResult result;
  result.set_super_weights_source(w.locate_super_weights ? "locate" : "request");
  if (w.locate_super_weights) {  // Locate's confirmed super weights, found first
    w.locate.cancelled = &e->cancelled;
    w.locate.on_progress = [this, e](double p) { SetProgress(e, 0.05 * p); };
    auto located = Locate(*w.model, w.tokens, w.locate);
    if (!located.ok()) return Finish(e, located.status());
    for (const SuperWeight& s : located->candidates) {
      if (s.confirmed) options.super_weights.push_back({s.layer, s.row, s.col});
    }
    if (options.super_weights.empty()) {
      return Finish(e, absl::FailedPreconditionError(
                           "Locate confirmed no super weight in this model; name the ones to "
                           "ablate with super_weights (--super_weights=LAYER,ROW,COL)"));
    }
  }
  const double base = w.locate_super_weights ? 0.05 : 0.0;
  options.on_progress = [this, e, base](double p, const std::string&) {
    SetProgress(e, base + (1 - base) * p);
  };
  auto r = Ablate(*w.model, options);
  if (!r.ok()) return Finish(e, r.status());
  result.MergeFrom(ToProto(*r));
  for (const SuperWeightCoordinate& c : options.super_weights) {
    v1::Coordinate* p = result.add_super_weights();
    p->set_layer(c.layer);
    p->set_row(c.row);
    p->set_col(c.col);
  }
  result.set_token_prob_contexts(static_cast<int>(options.token_probability_contexts.size()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    *e->job.mutable_ablate() = std::move(result);
  }
  Finish(e, absl::OkStatus());
}

void JobQueue::RunScoreBatch(const std::vector<Entry*>& batch) {
  Entry* first = batch[0];
  if (first->work.window > 0) {  // perplexity over windows: a job of its own
    PerplexityOptions po;
    po.window = first->work.window;
    po.max_windows = first->work.max_windows;
    po.precision = first->work.precision;
    po.edits = first->work.edits.empty() ? nullptr : &first->work.edits;
    po.cancelled = &first->cancelled;
    po.on_progress = [this, first](double p) { SetProgress(first, p); };
    auto r = Perplexity(*first->work.model, first->work.tokens, po);
    if (!r.ok()) return Finish(first, r.status());
    metrics_->RecordBatch(1, r->tokens_scored + r->windows);
    {
      std::lock_guard<std::mutex> lock(mu_);
      v1::ScoreResult* s = first->job.mutable_score();
      s->set_perplexity(r->perplexity);
      s->set_mean_nll(r->mean_nll);
      s->set_tokens_scored(r->tokens_scored);
      s->set_windows(r->windows);
    }
    return Finish(first, absl::OkStatus());
  }
  // One forward pass for every sequence; each carries its own edit set. A cancelled job is
  // left out of the pass; if all are, the pass is skipped.
  std::vector<Entry*> live;
  for (Entry* e : batch) {
    if (e->cancelled) {
      Finish(e, absl::CancelledError("cancelled"));
    } else {
      live.push_back(e);
    }
  }
  if (live.empty()) return;
  std::vector<SequenceInput> inputs;
  int64_t tokens = 0;
  for (Entry* e : live) {
    inputs.push_back({e->work.tokens, e->work.edits.empty() ? nullptr : &e->work.edits});
    tokens += e->work.tokens.size();
  }
  // Cancelling any one job of the batch does not stop the others: the flag passed is the
  // first's only when it is alone.
  auto r = TokenLogprobs(*first->work.model, inputs, first->work.precision,
                         live.size() == 1 ? &live[0]->cancelled : nullptr);
  metrics_->RecordBatch(static_cast<int>(live.size()), tokens);
  for (size_t i = 0; i < live.size(); ++i) {
    if (!r.ok()) {
      Finish(live[i], r.status());
      continue;
    }
    const std::vector<float>& lp = (*r)[i];
    double nll = 0;
    for (float v : lp) nll -= v;
    {
      std::lock_guard<std::mutex> lock(mu_);
      v1::ScoreResult* s = live[i]->job.mutable_score();
      s->mutable_logprobs()->Add(lp.begin(), lp.end());
      s->set_tokens_scored(static_cast<int64_t>(lp.size()));
      if (!lp.empty()) {
        s->set_mean_nll(nll / lp.size());
        s->set_perplexity(std::exp(nll / lp.size()));
      }
    }
    Finish(live[i], absl::OkStatus());
  }
}

}  // namespace superweight::server
