#include "server/jobs/postgres_job_store.h"

#include <poll.h>

#include <algorithm>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/decode.h"
#include "server/jobs/job_runner.h"

namespace superweight::server {
namespace {

// The schema, one migration per version, applied in order at start-up; a release that changes
// the schema adds a version (never edits a past one).
struct Migration {
  int version;
  const char* sql;
};
constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE superweight_jobs (
  seq bigserial PRIMARY KEY,
  kind text NOT NULL,
  model text NOT NULL,
  request bytea NOT NULL,          -- the request message as sent (less async)
  request_id text UNIQUE,          -- the caller's idempotency key
  model_identity text NOT NULL,    -- the model files it was submitted against
  state smallint NOT NULL,         -- superweight.v1.Job.State
  progress real NOT NULL DEFAULT 0,
  attempts integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL,
  claimed_by text,                 -- the replica running it, or that last ran it
  lease_until timestamptz,         -- its claim holds until then unless renewed
  cancel_requested boolean NOT NULL DEFAULT false,
  error_code integer NOT NULL DEFAULT 0,
  error_message text NOT NULL DEFAULT '',
  outcome bytea,                   -- a superweight.v1.Job holding the result
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  parts integer NOT NULL DEFAULT 0,  -- a job fanned out: its parts are rows of their own
  parent_seq bigint REFERENCES superweight_jobs (seq) ON DELETE CASCADE,  -- a part: its job
  part integer                       -- a part: its place in the job's result
);
CREATE INDEX superweight_jobs_queued ON superweight_jobs (seq) WHERE state = 1;
CREATE INDEX superweight_jobs_running ON superweight_jobs (lease_until) WHERE state = 2;
CREATE INDEX superweight_jobs_finished ON superweight_jobs (finished_at) WHERE state >= 3;
CREATE INDEX superweight_jobs_model ON superweight_jobs (model, seq);
CREATE INDEX superweight_jobs_parts ON superweight_jobs (parent_seq, part);
)sql"},
};

// Held while migrating, so that replicas starting together migrate once.
constexpr int64_t kMigrationLock = 0x5375706572570001;  // "SuperW" 1
// Held by the replica that reports the queue-wide gauges.
constexpr int64_t kGaugeLock = 0x5375706572570002;

constexpr char kChannel[] = "superweight_jobs";

constexpr char kJobColumns[] =
    "seq, kind, model, state, progress, error_code, error_message, "
    "(extract(epoch from created_at) * 1000)::bigint, "
    "coalesce((extract(epoch from finished_at) * 1000)::bigint, 0), coalesce(request_id, ''), "
    "attempts, outcome, coalesce(claimed_by, ''), parts, coalesce(parent_seq, 0), "
    "coalesce((extract(epoch from started_at) * 1000)::bigint, 0)";

// The kinds this build runs, as a text[] literal: a job of a kind only a newer release knows is
// left to replicas of that release (a rolling upgrade), not failed here.
std::string KnownKinds() {
  std::string kinds = "{";
  for (const JobKind* kind : JobKinds()) {
    if (kinds.size() > 1) kinds += ",";
    kinds += std::string(kind->name());
  }
  return kinds + "}";
}

std::string IdOf(int64_t seq) { return absl::StrFormat("job-%06d", seq); }

// The row's sequence number where `id` is one of ours ("job-" and at least six digits).
bool SeqOf(const std::string& id, int64_t* seq) {
  return id.rfind("job-", 0) == 0 && absl::SimpleAtoi(id.substr(4), seq) && *seq > 0 &&
         IdOf(*seq) == id;
}

v1::Job JobOfRow(const pg::Result& r, int row) {
  v1::Job job;
  if (!r.IsNull(row, 11)) job.ParseFromString(r.Bytes(row, 11));  // the result
  job.set_id(IdOf(r.Int(row, 0)));
  job.set_kind(r.Text(row, 1));
  job.set_model(r.Text(row, 2));
  job.set_state(static_cast<v1::Job::State>(r.Int(row, 3)));
  float progress = 0;
  if (absl::SimpleAtof(r.Text(row, 4), &progress)) job.set_progress(progress);
  job.set_error_code(static_cast<int32_t>(r.Int(row, 5)));
  job.set_error_message(r.Text(row, 6));
  job.set_created_unix_ms(r.Int(row, 7));
  job.set_finished_unix_ms(r.Int(row, 8));
  job.set_request_id(r.Text(row, 9));
  job.set_attempts(static_cast<int32_t>(r.Int(row, 10)));
  job.set_replica(r.Text(row, 12));
  job.set_parts(static_cast<int32_t>(r.Int(row, 13)));
  if (r.Int(row, 14) > 0) job.set_part_of(IdOf(r.Int(row, 14)));
  job.set_started_unix_ms(r.Int(row, 15));
  return job;
}

absl::StatusOr<pg::Result> Run(pg::Pool& pool, const std::string& sql,
                               const std::vector<pg::Param>& params = {}) {
  auto conn = pool.Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)->Exec(sql, params);
}

std::string Millis(std::chrono::milliseconds ms) { return absl::StrCat(ms.count()); }

absl::Status Migrate(pg::Connection& conn) {
  auto locked = conn.Exec("SELECT pg_advisory_lock($1)", {pg::Text(absl::StrCat(kMigrationLock))});
  if (!locked.ok()) return locked.status();
  auto migrate = [&]() -> absl::Status {
    auto made = conn.Exec(
        "CREATE TABLE IF NOT EXISTS superweight_schema (version integer NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())");
    if (!made.ok()) return made.status();
    auto current = conn.Exec("SELECT coalesce(max(version), 0) FROM superweight_schema");
    if (!current.ok()) return current.status();
    const int64_t version = current->Int(0, 0);
    if (version > kJobStoreSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the job store's schema is version %d, newer than this replica knows (%d): a newer "
          "release migrated it; run that release here too",
          version, kJobStoreSchemaVersion));
    }
    for (const Migration& m : kMigrations) {
      if (m.version <= version) continue;
      for (const char* sql : {"BEGIN", m.sql}) {
        if (absl::Status s = conn.ExecScript(sql); !s.ok()) {
          conn.ExecScript("ROLLBACK").IgnoreError();
          return s;
        }
      }
      auto recorded = conn.Exec("INSERT INTO superweight_schema (version) VALUES ($1)",
                                {pg::Text(absl::StrCat(m.version))});
      if (!recorded.ok()) {
        conn.Exec("ROLLBACK").IgnoreError();
        return recorded.status();
      }
      if (auto r = conn.Exec("COMMIT"); !r.ok()) return r.status();
    }
    return absl::OkStatus();
  };
  absl::Status status = migrate();
  conn.Exec("SELECT pg_advisory_unlock($1)", {pg::Text(absl::StrCat(kMigrationLock))})
      .IgnoreError();
  return status;
}

}  // namespace

// A job this replica claimed: the attempt it holds, its planned work, and what the heartbeat
// learns of it.
struct PostgresJobStore::Claim {
  int64_t seq = 0;
  int64_t parent_seq = 0;  // a part of a fanned-out job: that job
  std::string id;
  std::string kind;
  std::string model;
  std::string request;
  std::string model_identity;
  int attempt = 0;
  JobWork work;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> cancelled_by_client{false};
  std::atomic<bool> lost{false};  // the claim no longer holds: nothing of it is written
  std::atomic<float> progress{0.f};
  float progress_written = 0.f;  // by the heartbeat
  int64_t started_ms = 0;
};

absl::StatusOr<std::unique_ptr<PostgresJobStore>> PostgresJobStore::Open(
    PostgresStoreOptions options, Metrics* metrics) {
  auto conn = pg::Connection::Open(options.url);
  if (!conn.ok()) return conn.status();
  if (absl::Status s = Migrate(**conn); !s.ok()) return s;
  return std::unique_ptr<PostgresJobStore>(new PostgresJobStore(std::move(options), metrics));
}

PostgresJobStore::PostgresJobStore(PostgresStoreOptions options, Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics), pool_(options_.url, 8) {}

PostgresJobStore::~PostgresJobStore() {
  Stop();
  if (worker_.joinable()) worker_.join();
  if (listener_.joinable()) listener_.join();
}

void PostgresJobStore::Start(const PlanContext* planner) {
  planner_ = planner;
  listener_ = std::thread([this] { ListenLoop(); });
  worker_ = std::thread([this] { WorkerLoop(); });
}

void PostgresJobStore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_flag_ = true;
  changed_.notify_all();
}

void PostgresJobStore::OnHealthChange(std::function<void(bool)> handler) {
  std::lock_guard<std::mutex> lock(mu_);
  on_health_ = std::move(handler);
  if (on_health_ && !reachable_) on_health_(false);  // a change before it was registered
}

void PostgresJobStore::SetReachable(bool reachable) const {
  // Every statement reports here: no lock unless the state changes; under it, the handler hears
  // changes in the order they happened.
  if (reachable_.load() == reachable) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (reachable_.exchange(reachable) == reachable) return;
  std::cerr << "superweightd: the job store is " << (reachable ? "reachable again" : "unreachable")
            << "\n";
  if (on_health_) on_health_(reachable);
}

template <typename T>
absl::StatusOr<T> PostgresJobStore::Observe(absl::StatusOr<T> result) const {
  if (result.ok()) {
    SetReachable(true);
  } else if (absl::IsUnavailable(result.status())) {
    SetReachable(false);
  }
  return result;
}

absl::StatusOr<std::string> PostgresJobStore::Submit(JobSubmission submission) {
  if (FindJobKind(submission.kind) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no job kind '", submission.kind, "'"));
  }
  // The job the request_id already names, or "" where none does (yet).
  auto named_job = [&]() -> absl::StatusOr<std::string> {
    auto existing = Observe(Run(
        pool_, absl::StrCat("SELECT ", kJobColumns, " FROM superweight_jobs WHERE request_id = $1"),
        {pg::Text(submission.request_id)}));
    if (!existing.ok()) return existing.status();
    if (existing->rows() == 0) return std::string();
    const v1::Job job = JobOfRow(*existing, 0);
    if (absl::Status s = SameRequest(job, submission); !s.ok()) return s;
    return job.id();
  };
  // A retry of a known request_id is answered even when the queue is full.
  if (!submission.request_id.empty()) {
    auto named = named_job();
    if (!named.ok() || !named->empty()) return named;
  }
  auto queued = Observe(Run(pool_, "SELECT count(*) FROM superweight_jobs WHERE state = 1"));
  if (!queued.ok()) return queued.status();
  if (queued->Int(0, 0) >= options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the job queue is full (%d jobs waiting)", queued->Int(0, 0)));
  }
  // A job whose kind splits it is fanned out: its parts are queued jobs any replica claims, and
  // the job itself waits (RUNNING, claimed by none) for them to be assembled.
  const std::vector<std::string> parts =
      FindJobKind(submission.kind)->Split(submission.request, submission.work);
  for (int tries = 0; tries < 3; ++tries) {
    auto inserted = Observe(InsertJob(submission, parts));
    if (!inserted.ok()) return inserted.status();
    if (inserted->rows() == 1) return IdOf(inserted->Int(0, 0));
    // The request_id names a job already (a racing submit's): that one is the answer.
    auto named = named_job();
    if (!named.ok() || !named->empty()) return named;
    // Pruned meanwhile: insert again.
  }
  return absl::AbortedError("the job store kept changing under this submit; retry");
}

absl::StatusOr<pg::Result> PostgresJobStore::InsertJob(const JobSubmission& submission,
                                                       const std::vector<std::string>& parts) {
  auto conn = pool_.Acquire();
  if (!conn.ok()) return conn.status();
  if (absl::Status s = (*conn)->ExecScript("BEGIN"); !s.ok()) return s;
  auto inserted = (*conn)->Exec(
      absl::StrCat("WITH i AS (INSERT INTO superweight_jobs (kind, model, request, request_id, "
                   "model_identity, state, max_attempts, parts, started_at) VALUES ($1, $2, $3, "
                   "NULLIF($4, ''), $5, CASE WHEN $7::integer > 0 THEN 2 ELSE 1 END, $6, $7, "
                   "CASE WHEN $7::integer > 0 THEN now() END) ON CONFLICT (request_id) DO "
                   "NOTHING RETURNING seq) SELECT seq, pg_notify('",
                   kChannel, "', 'queued') FROM i"),
      {pg::Text(submission.kind), pg::Text(submission.model), pg::Binary(submission.request),
       pg::Text(submission.request_id), pg::Text(submission.model_identity),
       pg::Text(absl::StrCat(options_.max_attempts)), pg::Text(absl::StrCat(parts.size()))});
  if (inserted.ok() && inserted->rows() == 1) {
    const std::string parent = absl::StrCat(inserted->Int(0, 0));
    for (size_t i = 0; i < parts.size(); ++i) {
      auto part = (*conn)->Exec(
          "INSERT INTO superweight_jobs (kind, model, request, model_identity, state, "
          "max_attempts, parent_seq, part) VALUES ($1, $2, $3, $4, 1, $5, $6, $7)",
          {pg::Text(submission.kind), pg::Text(submission.model), pg::Binary(parts[i]),
           pg::Text(submission.model_identity), pg::Text(absl::StrCat(options_.max_attempts)),
           pg::Text(parent), pg::Text(absl::StrCat(i))});
      if (!part.ok()) {
        inserted = part.status();
        break;
      }
    }
  }
  if (!inserted.ok()) {
    (*conn)->ExecScript("ROLLBACK").IgnoreError();
    return inserted;
  }
  if (absl::Status s = (*conn)->ExecScript("COMMIT"); !s.ok()) return s;
  return inserted;
}

absl::StatusOr<v1::Job> PostgresJobStore::Get(const std::string& id) const {
  int64_t seq = 0;
  if (!SeqOf(id, &seq)) return absl::NotFoundError(absl::StrFormat("no job '%s'", id));
  auto r = Observe(
      Run(pool_, absl::StrCat("SELECT ", kJobColumns, " FROM superweight_jobs WHERE seq = $1"),
          {pg::Text(absl::StrCat(seq))}));
  std::lock_guard<std::mutex> lock(mu_);
  if (!r.ok()) {
    // What this replica read last, while the store cannot be asked.
    auto it = last_read_.find(id);
    if (absl::IsUnavailable(r.status()) && it != last_read_.end()) return it->second;
    return r.status();
  }
  if (r->rows() == 0) {
    last_read_.erase(id);
    return absl::NotFoundError(absl::StrFormat("no job '%s'", id));
  }
  v1::Job job = JobOfRow(*r, 0);
  constexpr size_t kRemembered = 4096;
  if (last_read_.size() >= kRemembered) last_read_.clear();
  last_read_[id] = job;
  return job;
}

absl::StatusOr<std::vector<v1::Job>> PostgresJobStore::List(const std::string& model,
                                                            int limit) const {
  auto r = Observe(Run(pool_,
                       absl::StrCat("SELECT ", kJobColumns,
                                    " FROM superweight_jobs WHERE parent_seq IS NULL AND "
                                    "($1 = '' OR model = $1) ORDER BY seq DESC LIMIT $2"),
                       {pg::Text(model), pg::Text(absl::StrCat(limit))}));
  if (!r.ok()) return r.status();
  std::vector<v1::Job> jobs;
  for (int i = 0; i < r->rows(); ++i) jobs.push_back(JobOfRow(*r, i));
  return jobs;
}

absl::StatusOr<v1::Job> PostgresJobStore::Cancel(const std::string& id) {
  int64_t seq = 0;
  if (!SeqOf(id, &seq)) return absl::NotFoundError(absl::StrFormat("no job '%s'", id));
  // Queued: cancelled here and now. Running: its replica sees the request at its next
  // heartbeat and stops. A fanned-out job ends cancelled at once (no replica runs it), its
  // parts as above.
  auto r = Observe(
      Run(pool_,
          absl::StrCat("WITH u AS (UPDATE superweight_jobs SET cancel_requested = true, "
                       "state = CASE WHEN state = 1 OR parts > 0 THEN 5 ELSE state END, "
                       "finished_at = CASE WHEN state = 1 OR parts > 0 THEN now() ELSE finished_at "
                       "END WHERE (seq = $1 OR parent_seq = $1) AND state IN (1, 2) RETURNING seq) "
                       "SELECT pg_notify('",
                       kChannel, "', 'cancel') FROM u"),
          {pg::Text(absl::StrCat(seq))}));
  if (!r.ok()) return r.status();
  auto job = Get(id);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (job.ok() && !Finished(*job) && std::chrono::steady_clock::now() < deadline) {
    job = WaitForChange(id, *job, 250);
  }
  return job;
}

absl::StatusOr<v1::Job> PostgresJobStore::WaitForChange(const std::string& id, const v1::Job& seen,
                                                        int timeout_ms) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    uint64_t heard;
    {
      std::lock_guard<std::mutex> lock(mu_);
      heard = notifications_;
    }
    auto job = Get(id);
    if (!job.ok()) return job;
    if (job->state() != seen.state() || job->progress() != seen.progress() ||
        std::chrono::steady_clock::now() >= deadline) {
      return job;
    }
    // Woken by a notification, or polled: a notification is a hint, not a guarantee.
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_until(
        lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(500)),
        [&] { return stopping_ || notifications_ != heard; });
    if (stopping_) return Get(id);
  }
}

void PostgresJobStore::ListenLoop() {
  std::chrono::milliseconds backoff(250);
  bool reporting = false;
  auto next_report = std::chrono::steady_clock::now();
  while (!stop_flag_) {
    auto conn = pg::Connection::Open(options_.url);
    absl::Status listening =
        conn.ok() ? (*conn)->Exec(absl::StrCat("LISTEN ", kChannel)).status() : conn.status();
    if (!listening.ok()) {
      SetReachable(false);
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait_for(lock, backoff, [&] { return stopping_; });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      continue;
    }
    backoff = std::chrono::milliseconds(250);
    SetReachable(true);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++notifications_;  // whatever happened while deaf is read again
    }
    changed_.notify_all();
    reporting = false;
    while (!stop_flag_) {
      Maintain();  // here, not in the worker: a replica busy with a long job still does it
      pollfd fd{(*conn)->Socket(), POLLIN, 0};
      ::poll(&fd, 1, 500);
      auto payloads = (*conn)->TakeNotifications();
      if (!payloads.ok()) break;
      if (!payloads->empty()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++notifications_;
        }
        changed_.notify_all();
      }
      if (std::chrono::steady_clock::now() >= next_report) {
        next_report = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        if (!reporting) {
          auto got = (*conn)->Exec("SELECT pg_try_advisory_lock($1)",
                                   {pg::Text(absl::StrCat(kGaugeLock))});
          reporting = got.ok() && got->Text(0, 0) == "t";
        }
        if (reporting) ReportQueue(**conn);
        if ((*conn)->Broken()) break;
      }
    }
    if (reporting) {  // the lock went with the connection: another replica reports now
      for (const JobKind* kind : JobKinds()) metrics_->SetStoreQueue(std::string(kind->name()), 0);
      metrics_->SetStoreOldestQueuedAge(0);
      metrics_->SetStoreRunning(0);
    }
    if (!stop_flag_) SetReachable(false);
  }
}

void PostgresJobStore::ReportQueue(pg::Connection& conn) {
  auto queued = conn.Exec(
      "SELECT kind, count(*), coalesce(extract(epoch from now() - min(created_at)), 0) "
      "FROM superweight_jobs WHERE state = 1 GROUP BY kind");
  // A fanned-out job runs as its parts: counted once, as them.
  auto running = conn.Exec("SELECT count(*) FROM superweight_jobs WHERE state = 2 AND parts = 0");
  if (!queued.ok() || !running.ok()) return;
  double oldest = 0;
  for (const JobKind* job_kind : JobKinds()) {
    const std::string kind(job_kind->name());
    double count = 0;
    for (int i = 0; i < queued->rows(); ++i) {
      if (queued->Text(i, 0) != kind) continue;
      count = static_cast<double>(queued->Int(i, 1));
      double age = 0;
      if (absl::SimpleAtod(queued->Text(i, 2), &age)) oldest = std::max(oldest, age);
    }
    metrics_->SetStoreQueue(kind, count);
  }
  metrics_->SetStoreOldestQueuedAge(oldest);
  metrics_->SetStoreRunning(static_cast<double>(running->Int(0, 0)));
}

void PostgresJobStore::Maintain() {
  const auto now = std::chrono::steady_clock::now();
  if (now < next_maintenance_) return;
  next_maintenance_ = now + std::max(options_.lease / 3, std::chrono::milliseconds(200));
  // A claim whose lease ran out: its replica died, hangs, or lost the store. The job goes back
  // to the queue (or, past max_attempts, fails saying why; or ends cancelled if asked to).
  auto expired = Observe(Run(
      pool_,
      absl::StrCat(
          "WITH r AS (UPDATE superweight_jobs SET "
          "state = CASE WHEN cancel_requested THEN 5 WHEN attempts >= max_attempts THEN 4 "
          "ELSE 1 END, "
          "error_code = CASE WHEN NOT cancel_requested AND attempts >= max_attempts THEN 10 "
          "ELSE 0 END, "
          "error_message = CASE WHEN NOT cancel_requested AND attempts >= max_attempts THEN "
          "format('the replica running it (%s) stopped renewing its lease, %s times of "
          "max_attempts %s', claimed_by, attempts, max_attempts) ELSE '' END, "
          "finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN now() END, "
          "lease_until = NULL, progress = 0 "
          "WHERE state = 2 AND lease_until < now() RETURNING seq) "
          "SELECT seq, pg_notify('",
          kChannel, "', 'requeued') FROM r")));
  if (expired.ok() && expired->rows() > 0) {
    metrics_->RecordLeasesExpired(expired->rows());
    std::cerr << "superweightd: " << expired->rows()
              << " job(s) whose replica stopped renewing its lease requeued or failed\n";
  }
  // Fanned-out jobs whose parts all ended, or one failed or was cancelled (by a lease that ran
  // out, or a replica that stopped between a part's end and the assembly): assembled here.
  auto ended = Observe(Run(pool_,
                           "SELECT p.seq FROM superweight_jobs p WHERE p.state = 2 AND p.parts > "
                           "0 AND (EXISTS (SELECT 1 FROM superweight_jobs c WHERE c.parent_seq "
                           "= p.seq AND c.state >= 4) OR NOT EXISTS (SELECT 1 FROM "
                           "superweight_jobs c WHERE c.parent_seq = p.seq AND c.state < 3))"));
  if (ended.ok()) {
    for (int i = 0; i < ended->rows(); ++i) AssembleJob(ended->Int(i, 0));
  }
  if (now < next_prune_) return;
  next_prune_ = now + std::chrono::minutes(1);
  const JobRetention& keep = options_.retention;
  if (keep.max_age.count() > 0) {
    Observe(Run(pool_,
                "DELETE FROM superweight_jobs WHERE parent_seq IS NULL AND state >= 3 AND "
                "finished_at < "
                "now() - "
                "make_interval(secs => $1::double precision / 1000)",
                {pg::Text(Millis(keep.max_age))}))
        .IgnoreError();
  }
  if (keep.max_finished > 0) {
    Observe(Run(pool_,
                "DELETE FROM superweight_jobs WHERE seq IN (SELECT seq FROM superweight_jobs "
                "WHERE parent_seq IS NULL AND state >= 3 ORDER BY finished_at DESC NULLS LAST, seq "
                "DESC OFFSET $1)",
                {pg::Text(absl::StrCat(keep.max_finished))}))
        .IgnoreError();
  }
}

absl::Status PostgresJobStore::PlanClaim(Claim* claim) const {
  const JobKind* kind = FindJobKind(claim->kind);
  if (kind == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat("this replica runs no job kind '", claim->kind, "' (an older release?)"));
  }
  auto work = kind->Plan(*planner_, claim->request);
  if (!work.ok()) return work.status();
  if (absl::Status s = CheckModelIdentity(*work, claim->model_identity); !s.ok()) return s;
  claim->work = std::move(*work);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::unique_ptr<PostgresJobStore::Claim>>>
PostgresJobStore::ClaimBatch() {
  // Claimed with the lease, oldest first; rows another replica is claiming are skipped.
  const std::string claim_sql = absl::StrCat(
      "UPDATE superweight_jobs SET state = 2, attempts = attempts + 1, claimed_by = $1, "
      "lease_until = now() + make_interval(secs => $2::double precision / 1000), "
      "started_at = now(), progress = 0 WHERE seq IN (SELECT seq FROM superweight_jobs "
      "WHERE state = 1 AND kind = ANY($6::text[]) AND ($3 = '' OR (kind = $3 AND model = $4)) "
      "ORDER BY seq LIMIT $5 "
      "FOR UPDATE SKIP LOCKED) RETURNING seq, kind, model, request, model_identity, attempts, "
      "coalesce(parent_seq, 0)");
  auto claim_rows = [&](const std::string& kind, const std::string& model,
                        int limit) -> absl::StatusOr<std::vector<std::unique_ptr<Claim>>> {
    auto r =
        Observe(Run(pool_, claim_sql,
                    {pg::Text(options_.replica), pg::Text(Millis(options_.lease)), pg::Text(kind),
                     pg::Text(model), pg::Text(absl::StrCat(limit)), pg::Text(KnownKinds())}));
    if (!r.ok()) return r.status();
    std::vector<std::unique_ptr<Claim>> claims;
    for (int i = 0; i < r->rows(); ++i) {
      auto c = std::make_unique<Claim>();
      c->seq = r->Int(i, 0);
      c->id = IdOf(c->seq);
      c->kind = r->Text(i, 1);
      c->model = r->Text(i, 2);
      c->request = r->Bytes(i, 3);
      c->model_identity = r->Text(i, 4);
      c->attempt = static_cast<int>(r->Int(i, 5));
      c->parent_seq = r->Int(i, 6);
      c->started_ms = UnixNowMs();
      claims.push_back(std::move(c));
    }
    std::sort(claims.begin(), claims.end(),
              [](const auto& a, const auto& b) { return a->seq < b->seq; });
    return claims;
  };
  auto first = claim_rows("", "", 1);
  if (!first.ok() || first->empty()) return first;
  std::vector<std::unique_ptr<Claim>> batch;
  std::unique_ptr<Claim> head = std::move(first->front());
  if (absl::Status s = PlanClaim(head.get()); !s.ok()) {
    FinishClaim(head.get(), s);
    return batch;
  }
  const JobKind* kind = FindJobKind(head->kind);
  batch.push_back(std::move(head));
  if (!kind->Batches() || options_.max_batch <= 1) return batch;
  auto more = claim_rows(batch[0]->kind, batch[0]->model, options_.max_batch - 1);
  if (!more.ok()) return batch;
  size_t tokens = batch[0]->work.tokens.size();
  for (auto& c : *more) {
    if (absl::Status s = PlanClaim(c.get()); !s.ok()) {
      FinishClaim(c.get(), s);
      continue;
    }
    if (kind->Joins(batch[0]->work, c->work, tokens)) {
      tokens += c->work.tokens.size();
      batch.push_back(std::move(c));
    } else {
      ReleaseClaim(*c);
    }
  }
  return batch;
}

absl::Status PostgresJobStore::StillHeld(Claim& claim) {
  // The lease renewed under the fence: a replica whose claim lapsed publishes nothing (another
  // runs the job, and publishes its own).
  auto r =
      claim.lost
          ? absl::StatusOr<pg::Result>(absl::AbortedError("lost"))
          : Observe(Run(pool_,
                        "UPDATE superweight_jobs SET lease_until = now() + "
                        "make_interval(secs => $4::double precision / 1000) WHERE seq "
                        "= $1 AND attempts = $2 AND claimed_by = $3 AND state = 2 "
                        "RETURNING seq",
                        {pg::Text(absl::StrCat(claim.seq)), pg::Text(absl::StrCat(claim.attempt)),
                         pg::Text(options_.replica), pg::Text(Millis(options_.lease))}));
  if (r.ok() && r->rows() == 1) return absl::OkStatus();
  claim.lost = true;
  return absl::AbortedError(
      absl::StrCat("this replica's claim on the job (attempt ", claim.attempt,
                   ") no longer holds: another replica runs it, and publishes its own result"));
}

void PostgresJobStore::ReleaseClaim(const Claim& claim) {
  Observe(Run(pool_,
              absl::StrCat("WITH u AS (UPDATE superweight_jobs SET state = CASE WHEN "
                           "cancel_requested THEN 5 ELSE 1 END, finished_at = CASE WHEN "
                           "cancel_requested THEN now() END, attempts = attempts - 1, "
                           "lease_until = NULL, progress = 0 "
                           "WHERE seq = $1 AND attempts = $2 AND claimed_by = $3 AND state = 2 "
                           "RETURNING seq) SELECT pg_notify('",
                           kChannel, "', 'queued') FROM u"),
              {pg::Text(absl::StrCat(claim.seq)), pg::Text(absl::StrCat(claim.attempt)),
               pg::Text(options_.replica)}))
      .IgnoreError();
}

void PostgresJobStore::FinishClaim(Claim* claim, const absl::StatusOr<v1::Job>& outcome) {
  if (claim->lost) {
    std::cerr << "superweightd: job " << claim->id << ": this replica's claim (attempt "
              << claim->attempt << ") no longer holds; its outcome is dropped\n";
    return;
  }
  const bool shutting_down = stop_flag_ && !claim->cancelled_by_client;
  if (!outcome.ok() && absl::IsCancelled(outcome.status()) && shutting_down) {
    // This replica stops: the job goes back to the queue for another, its attempt not counted
    // (a rolling restart is no failure of the job), or ends cancelled if that was asked.
    Observe(Run(pool_,
                absl::StrCat("WITH u AS (UPDATE superweight_jobs SET state = CASE WHEN "
                             "cancel_requested THEN 5 ELSE 1 END, finished_at = CASE WHEN "
                             "cancel_requested THEN now() END, attempts = attempts - 1, "
                             "lease_until = NULL, progress = 0 WHERE seq = $1 AND attempts = $2 "
                             "AND claimed_by = $3 AND state = 2 RETURNING seq) SELECT pg_notify('",
                             kChannel, "', 'queued') FROM u"),
                {pg::Text(absl::StrCat(claim->seq)), pg::Text(absl::StrCat(claim->attempt)),
                 pg::Text(options_.replica)}))
        .IgnoreError();
    return;
  }
  v1::Job::State state = v1::Job::SUCCEEDED;
  int code = 0;
  std::string message, result;
  if (outcome.ok()) {
    result = outcome->SerializeAsString();
  } else if (absl::IsCancelled(outcome.status())) {
    state = v1::Job::CANCELLED;
  } else {
    state = v1::Job::FAILED;
    code = static_cast<int>(outcome.status().code());
    message = std::string(outcome.status().message());
    // A text column takes UTF-8 only (a path in a message may be anything): cut where it stops.
    size_t bad = 0;
    if (!IsValidUtf8(message, &bad)) message = message.substr(0, bad) + "...";
  }
  // A part whose job was cancelled while it ran ends cancelled, whatever it computed: its job
  // will not be assembled, and a cancelled job's parts all read cancelled.
  const std::string sql = absl::StrCat(
      "WITH u AS (UPDATE superweight_jobs SET "
      "state = CASE WHEN cancel_requested AND parent_seq IS NOT NULL THEN 5 ELSE $4::smallint END, "
      "progress = CASE WHEN $4::smallint = 3 AND NOT (cancel_requested AND parent_seq IS NOT NULL) "
      "THEN 1 ELSE progress END, "
      "error_code = CASE WHEN cancel_requested AND parent_seq IS NOT NULL THEN 0 ELSE $5::int END, "
      "error_message = CASE WHEN cancel_requested AND parent_seq IS NOT NULL THEN '' ELSE $6 END, "
      "outcome = CASE WHEN cancel_requested AND parent_seq IS NOT NULL THEN NULL "
      "ELSE $7::bytea END, finished_at = now(), lease_until = NULL "
      "WHERE seq = $1 AND attempts = $2 AND claimed_by = $3 AND state = 2 RETURNING seq, state) "
      "SELECT seq, state, pg_notify('",
      kChannel, "', 'finished') FROM u");
  std::chrono::milliseconds backoff(250);
  while (true) {
    auto r =
        Observe(Run(pool_, sql,
                    {pg::Text(absl::StrCat(claim->seq)), pg::Text(absl::StrCat(claim->attempt)),
                     pg::Text(options_.replica), pg::Text(absl::StrCat(static_cast<int>(state))),
                     pg::Text(absl::StrCat(code)), pg::Text(message),
                     outcome.ok() ? pg::Binary(result) : pg::Null()}));
    if (r.ok()) {
      if (r->rows() == 0) {
        std::cerr << "superweightd: job " << claim->id << ": its claim (attempt " << claim->attempt
                  << ") expired before it finished; its outcome is dropped\n";
        return;
      }
      metrics_->RecordJob(claim->kind, JobStateName(static_cast<v1::Job::State>(r->Int(0, 1))),
                          (UnixNowMs() - claim->started_ms) / 1000.0);
      if (claim->parent_seq > 0) AssembleJob(claim->parent_seq);
      return;
    }
    if (!absl::IsUnavailable(r.status()) || stop_flag_) {
      // The lease runs out and another replica runs the job again: nothing is lost.
      std::cerr << "superweightd: job " << claim->id
                << ": cannot record its outcome: " << r.status().message() << "\n";
      return;
    }
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, backoff, [&] { return stopping_; });
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

void PostgresJobStore::AssembleJob(int64_t seq) {
  auto conn = pool_.Acquire();
  if (!conn.ok()) return;
  auto assemble = [&]() -> absl::Status {
    const std::string job = absl::StrCat(seq);
    // The job's row locked: replicas finishing its last parts together assemble it once.
    auto whole = (*conn)->Exec("SELECT state, kind FROM superweight_jobs WHERE seq = $1 FOR UPDATE",
                               {pg::Text(job)});
    if (!whole.ok()) return whole.status();
    if (whole->rows() == 0 || whole->Int(0, 0) >= 3) return absl::OkStatus();
    auto parts = (*conn)->Exec(
        "SELECT seq, state, error_code, error_message, outcome, request, progress FROM "
        "superweight_jobs WHERE parent_seq = $1 ORDER BY part",
        {pg::Text(job)});
    if (!parts.ok()) return parts.status();
    int failed = -1, cancelled = -1, unfinished = 0;
    double progress = 0;
    std::vector<std::string> requests;
    std::vector<v1::Job> results;
    for (int i = 0; i < parts->rows(); ++i) {
      const int state = static_cast<int>(parts->Int(i, 1));
      if (state == v1::Job::FAILED && failed < 0) failed = i;
      if (state == v1::Job::CANCELLED && cancelled < 0) cancelled = i;
      if (state < v1::Job::SUCCEEDED) ++unfinished;
      double p = 0;
      if (absl::SimpleAtod(parts->Text(i, 6), &p)) progress += p / parts->rows();
      requests.push_back(parts->Bytes(i, 5));
      results.emplace_back();
      results.back().ParseFromString(parts->Bytes(i, 4));
    }
    v1::Job::State state = v1::Job::SUCCEEDED;
    int code = 0;
    std::string message, outcome;
    if (failed >= 0) {
      state = v1::Job::FAILED;
      code = static_cast<int>(parts->Int(failed, 2));
      message = absl::StrCat("its part ", IdOf(parts->Int(failed, 0)),
                             " failed: ", parts->Text(failed, 3));
    } else if (cancelled >= 0) {
      state = v1::Job::CANCELLED;
    } else if (unfinished > 0) {
      return (*conn)
          ->Exec(absl::StrCat("WITH u AS (UPDATE superweight_jobs SET progress = $2 WHERE seq = "
                              "$1 AND progress IS DISTINCT FROM $2::real RETURNING seq) SELECT "
                              "pg_notify('",
                              kChannel, "', 'progress') FROM u"),
                 {pg::Text(job), pg::Text(absl::StrCat(progress))})
          .status();
    } else {
      auto assembled = FindJobKind(whole->Text(0, 1))->Assemble(requests, results);
      if (assembled.ok()) {
        outcome = assembled->SerializeAsString();
      } else {
        state = v1::Job::FAILED;
        code = static_cast<int>(assembled.status().code());
        message = std::string(assembled.status().message());
      }
    }
    auto written = (*conn)->Exec(
        absl::StrCat("WITH u AS (UPDATE superweight_jobs SET state = $2::smallint, progress = "
                     "CASE WHEN $2::smallint = 3 THEN 1 ELSE progress END, error_code = $3, "
                     "error_message = $4, outcome = $5, finished_at = now() WHERE seq = $1 "
                     "RETURNING seq) SELECT pg_notify('",
                     kChannel, "', 'finished') FROM u"),
        {pg::Text(job), pg::Text(absl::StrCat(static_cast<int>(state))),
         pg::Text(absl::StrCat(code)), pg::Text(message),
         outcome.empty() ? pg::Null() : pg::Binary(outcome)});
    if (!written.ok()) return written.status();
    if (state == v1::Job::SUCCEEDED) return absl::OkStatus();
    // A part failed or was cancelled: the others stop (queued ones at once).
    return (*conn)
        ->Exec(
            "UPDATE superweight_jobs SET cancel_requested = true, state = CASE WHEN state = 1 "
            "THEN 5 ELSE state END, finished_at = CASE WHEN state = 1 THEN now() ELSE "
            "finished_at END WHERE parent_seq = $1 AND state IN (1, 2)",
            {pg::Text(job)})
        .status();
  };
  absl::Status status = (*conn)->ExecScript("BEGIN");
  if (status.ok()) status = assemble();
  status = status.ok() ? (*conn)->ExecScript("COMMIT") : status;
  if (!status.ok()) {
    (*conn)->ExecScript("ROLLBACK").IgnoreError();
    Observe(absl::StatusOr<int>(status)).IgnoreError();
    // Maintain finds the job again.
    std::cerr << "superweightd: job " << IdOf(seq)
              << ": cannot assemble its parts yet: " << status.message() << "\n";
  }
}

void PostgresJobStore::RunClaims(std::vector<std::unique_ptr<Claim>>& batch) {
  // The heartbeat: progress written about once a second, the lease renewed, and what other
  // replicas asked (cancellation) or did (a claim taken after the lease ran out) read back.
  std::atomic<bool> done{false};
  std::thread heartbeat([&] {
    const auto renew_every = std::max(options_.lease / 3, std::chrono::milliseconds(100));
    auto last_renewed = std::chrono::steady_clock::now();
    while (!done) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        changed_.wait_for(lock, std::min(renew_every, std::chrono::milliseconds(1000)),
                          [&] { return done.load(); });
      }
      if (done) break;
      if (stop_flag_) {
        for (auto& c : batch) c->cancelled = true;
      }
      bool all_renewed = true;
      for (auto& c : batch) {
        if (c->lost) continue;
        const JobWork& w = c->work;
        if ((w.model != nullptr && w.model->MappingFaulted()) ||
            (w.reference != nullptr && w.reference->MappingFaulted())) {
          c->cancelled = true;
        }
        const float progress = c->progress.load();
        auto r = Observe(Run(
            pool_,
            absl::StrCat("WITH u AS (UPDATE superweight_jobs SET progress = $4, lease_until = "
                         "now() + make_interval(secs => $5::double precision / 1000) WHERE seq = "
                         "$1 AND attempts = $2 AND claimed_by = $3 AND state = 2 RETURNING "
                         "cancel_requested) SELECT cancel_requested, CASE WHEN $6 THEN "
                         "pg_notify('",
                         kChannel, "', 'progress') END FROM u"),
            {pg::Text(absl::StrCat(c->seq)), pg::Text(absl::StrCat(c->attempt)),
             pg::Text(options_.replica), pg::Text(absl::StrCat(progress)),
             pg::Text(Millis(options_.lease)),
             pg::Text(progress != c->progress_written ? "true" : "false")}));
        if (r.ok()) c->progress_written = progress;
        if (!r.ok()) {
          if (!absl::IsUnavailable(r.status())) {
            std::cerr << "superweightd: job " << c->id << ": heartbeat: " << r.status().message()
                      << "\n";
          }
          all_renewed = false;
          continue;
        }
        if (r->rows() == 0) {  // requeued by another replica after our lease ran out
          c->lost = true;
          c->cancelled = true;
          continue;
        }
        if (r->Text(0, 0) == "t") {
          c->cancelled_by_client = true;
          c->cancelled = true;
        }
      }
      for (auto& c : batch) {
        if (c->parent_seq > 0 && !c->lost) AssembleJob(c->parent_seq);  // its progress
      }
      if (all_renewed) {
        last_renewed = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - last_renewed > options_.lease) {
        // Unrenewed past the lease: another replica may hold the job now; stop computing it.
        for (auto& c : batch) {
          c->lost = true;
          c->cancelled = true;
        }
      }
    }
  });
  std::vector<JobRun> runs;
  for (auto& c : batch) {
    Claim* claim = c.get();
    std::cerr << "superweightd: job " << claim->id << " (" << claim->kind
              << ") running here, attempt " << claim->attempt << "\n";
    runs.push_back({&claim->work, &claim->cancelled,
                    [claim](double p) { claim->progress = static_cast<float>(p); },
                    [this, claim] { return StillHeld(*claim); }});
  }
  std::vector<absl::StatusOr<v1::Job>> outcomes =
      RunJobBatch(*FindJobKind(batch[0]->kind), runs, metrics_, batch[0]->id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    done = true;
  }
  changed_.notify_all();
  heartbeat.join();
  for (size_t i = 0; i < batch.size(); ++i) {
    absl::StatusOr<v1::Job> outcome = outcomes[i];
    // The client's cancel (read by the heartbeat) names the outcome, as on the file store.
    if (!outcome.ok() && absl::IsCancelled(outcome.status()) && batch[i]->cancelled_by_client) {
      outcome = absl::CancelledError("cancelled");
    }
    FinishClaim(batch[i].get(), outcome);
    batch[i]->work = JobWork();
  }
}

void PostgresJobStore::WorkerLoop() {
  std::chrono::milliseconds backoff(250);
  while (!stop_flag_) {
    uint64_t heard;
    {
      std::lock_guard<std::mutex> lock(mu_);
      heard = notifications_;
    }
    auto batch = ClaimBatch();
    if (!batch.ok()) {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait_for(lock, backoff, [&] { return stopping_; });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      continue;
    }
    backoff = std::chrono::milliseconds(250);
    if (batch->empty()) {
      // Woken by a notification (a job queued), or polled.
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait_for(lock, std::chrono::seconds(1),
                        [&] { return stopping_ || notifications_ != heard; });
      continue;
    }
    RunClaims(*batch);
  }
}

}  // namespace superweight::server
