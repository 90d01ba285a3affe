// The PostgreSQL job store against a real PostgreSQL 15: a throw-away cluster that
// tests/e2e/test_shared_store.py starts and names in SUPERWEIGHT_TEST_PG_URL (its admin
// database; each test makes a database of its own). Not part of ctest, which has no database.
#include "server/jobs/postgres_job_store.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "server/jobs/postgres.h"

namespace superweight::server {
namespace {

std::string AdminUrl() {
  const char* url = std::getenv("SUPERWEIGHT_TEST_PG_URL");
  return url == nullptr ? "" : url;
}

// A fresh database on the cluster, its URL.
std::string FreshDatabase() {
  static int made = 0;
  const std::string name = absl::StrCat("sw_unit_", ::getpid(), "_", ++made);
  auto admin = pg::Connection::Open(AdminUrl());
  EXPECT_TRUE(admin.ok()) << admin.status();
  EXPECT_TRUE((*admin)->ExecScript(absl::StrCat("CREATE DATABASE ", name)).ok());
  const std::string url = AdminUrl();
  return url.substr(0, url.rfind('/') + 1) + name;
}

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(AdminUrl().empty()) << "SUPERWEIGHT_TEST_PG_URL names no database";
    url_ = FreshDatabase();
  }
  std::unique_ptr<PostgresJobStore> Open(int max_queued = 16, JobRetention retention = {}) {
    PostgresStoreOptions o;
    o.retention = retention;
    o.url = url_;
    o.replica = "unit-test";
    o.max_queued = max_queued;
    o.lease = std::chrono::milliseconds(600);
    auto store = PostgresJobStore::Open(o, &metrics_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  JobSubmission Score(const std::string& model, const std::string& request_id = "") {
    JobSubmission s;
    s.kind = "score";
    s.model = model;
    s.request = "request bytes";
    s.request_id = request_id;
    return s;
  }
  absl::StatusOr<pg::Result> Sql(const std::string& sql) {
    auto conn = pg::Connection::Open(url_);
    if (!conn.ok()) return conn.status();
    return (*conn)->Exec(sql);
  }
  std::string url_;
  Metrics metrics_;
};

TEST(PostgresUrlTest, AUrlThatDoesNotParseIsRefusedWithoutItsPassword) {
  Metrics metrics;
  PostgresStoreOptions o;
  o.url = "postgresql://user:hunter2@127.0.0.1:notaport/db";
  auto store = PostgresJobStore::Open(o, &metrics);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << store.status();
  EXPECT_EQ(std::string(store.status().message()).find("hunter2"), std::string::npos);
  o.url = "mysql://user:hunter2@host/db";
  store = PostgresJobStore::Open(o, &metrics);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(std::string(store.status().message()).find("hunter2"), std::string::npos);
}

TEST(PostgresUrlTest, PasswordsWithSlashesOrInTheQueryAreNeverPrinted) {
  Metrics metrics;
  PostgresStoreOptions o;
  for (const char* url : {"postgresql://user:1234/sec@127.0.0.1:1/db",
                          "postgresql://user@127.0.0.1:1/db?password=hunter2&connect_timeout=2",
                          "postgresql://user:hun%74er2@127.0.0.1:1/db?connect_timeout=2"}) {
    o.url = url;
    auto store = PostgresJobStore::Open(o, &metrics);
    ASSERT_FALSE(store.ok()) << url;
    const std::string message(store.status().message());
    EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
    EXPECT_EQ(message.find("hun%74er2"), std::string::npos) << message;
    EXPECT_EQ(message.find("sec"), std::string::npos) << message;
  }
}

TEST(PostgresUrlTest, ADatabaseThatDoesNotAnswerIsUnavailableNamingTheHost) {
  Metrics metrics;
  PostgresStoreOptions o;
  o.url = "postgresql://user:hunter2@127.0.0.1:1/db?connect_timeout=2";
  auto store = PostgresJobStore::Open(o, &metrics);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable) << store.status();
  const std::string message(store.status().message());
  EXPECT_NE(message.find("127.0.0.1 port 1"), std::string::npos) << message;
  EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
}

TEST_F(PostgresJobStoreTest, TheSchemaIsMigratedOnceAndANewerOneIsRefused) {
  ASSERT_NE(Open(), nullptr);
  ASSERT_NE(Open(), nullptr);  // a second start migrates nothing
  auto versions = Sql("SELECT count(*), max(version) FROM superweight_schema");
  ASSERT_TRUE(versions.ok()) << versions.status();
  EXPECT_EQ(versions->Int(0, 0), 1);
  EXPECT_EQ(versions->Int(0, 1), kJobStoreSchemaVersion);
  ASSERT_TRUE(Sql("INSERT INTO superweight_schema (version) VALUES (99)").ok());
  PostgresStoreOptions o;
  o.url = url_;
  auto store = PostgresJobStore::Open(o, &metrics_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(store.status().message()).find("version 99"), std::string::npos)
      << store.status();
}

TEST_F(PostgresJobStoreTest, ReplicasStartingTogetherMigrateOnce) {
  std::vector<std::thread> starts;
  std::atomic<int> opened{0};
  for (int i = 0; i < 4; ++i) {
    starts.emplace_back([&] {
      PostgresStoreOptions o;
      o.url = url_;
      if (PostgresJobStore::Open(o, &metrics_).ok()) ++opened;
    });
  }
  for (auto& t : starts) t.join();
  EXPECT_EQ(opened, 4);
  auto versions = Sql("SELECT count(*) FROM superweight_schema");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(versions->Int(0, 0), 1);
}

TEST_F(PostgresJobStoreTest, AnyInstanceReadsListsAndCancelsWhatAnotherSubmitted) {
  auto a = Open();
  auto b = Open();
  auto id = a->Submit(Score("m1"));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "job-000001");
  ASSERT_TRUE(a->Submit(Score("m2")).ok());
  auto job = b->Get(*id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::Job::QUEUED);
  EXPECT_EQ(job->kind(), "score");
  EXPECT_EQ(job->model(), "m1");
  EXPECT_GT(job->created_unix_ms(), 0);
  auto all = b->List("", 10);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id(), "job-000002");  // newest first
  auto m1 = b->List("m1", 10);
  ASSERT_TRUE(m1.ok());
  ASSERT_EQ(m1->size(), 1u);
  EXPECT_EQ((*m1)[0].id(), *id);
  auto cancelled = b->Cancel(*id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::Job::CANCELLED);
  EXPECT_GT(cancelled->finished_unix_ms(), 0);
  EXPECT_EQ(a->Get(*id)->state(), v1::Job::CANCELLED);
  EXPECT_EQ(a->Cancel(*id)->state(), v1::Job::CANCELLED);  // again: as it is
}

TEST_F(PostgresJobStoreTest, UnknownIdsAndKindsAreRefused) {
  auto a = Open();
  for (const char* id : {"job-000009", "job-9", "job-x", "nope"}) {
    EXPECT_EQ(a->Get(id).status().code(), absl::StatusCode::kNotFound) << id;
    EXPECT_EQ(a->Cancel(id).status().code(), absl::StatusCode::kNotFound) << id;
  }
  JobSubmission s = Score("m");
  s.kind = "nothing";
  EXPECT_EQ(a->Submit(s).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PostgresJobStoreTest, TheSameRequestIdGivesOneJobFromAnyInstance) {
  auto a = Open();
  auto b = Open();
  auto first = a->Submit(Score("m", "ci-run-42"));
  ASSERT_TRUE(first.ok());
  auto again = b->Submit(Score("m", "ci-run-42"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(a->Get(*first)->request_id(), "ci-run-42");
  auto other = a->Submit(Score("another-model", "ci-run-42"));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(other.status().message()).find(*first), std::string::npos);
  EXPECT_EQ(a->List("", 10)->size(), 1u);
  // Racing submits of one key: one job.
  std::vector<std::thread> racers;
  std::vector<std::string> ids(6);
  for (int i = 0; i < 6; ++i) {
    racers.emplace_back([&, i] { ids[i] = *(i % 2 ? a : b)->Submit(Score("m", "race")); });
  }
  for (auto& t : racers) t.join();
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
  EXPECT_EQ(a->List("", 10)->size(), 2u);
}

TEST_F(PostgresJobStoreTest, AFullQueueRefusesSubmitsButAnswersARetriedRequestId) {
  auto a = Open(/*max_queued=*/2);
  auto keyed = a->Submit(Score("m", "retry-me"));
  ASSERT_TRUE(keyed.ok());
  ASSERT_TRUE(a->Submit(Score("m")).ok());
  EXPECT_EQ(a->Submit(Score("m")).status().code(), absl::StatusCode::kResourceExhausted);
  auto retried = a->Submit(Score("m", "retry-me"));
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(*retried, *keyed);
}

TEST_F(PostgresJobStoreTest, WaitForChangeSeesAnotherInstancesCancel) {
  auto a = Open();
  auto b = Open();
  auto id = a->Submit(Score("m"));
  ASSERT_TRUE(id.ok());
  const v1::Job seen = *a->Get(*id);
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    b->Cancel(*id).IgnoreError();
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto changed = a->WaitForChange(*id, seen, 5000);
  canceller.join();
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(changed->state(), v1::Job::CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST_F(PostgresJobStoreTest, ExpiredLeasesAreRequeuedThenFailedPastMaxAttempts) {
  auto a = Open();
  ASSERT_NE(a, nullptr);
  // Two jobs whose replica ("gone") died while running them: one on its first attempt, one on
  // its last.
  ASSERT_TRUE(Sql("INSERT INTO superweight_jobs (kind, model, request, model_identity, state, "
                  "attempts, max_attempts, claimed_by, lease_until) VALUES "
                  "('score', 'm', '', '', 2, 1, 3, 'gone:1', now() - interval '1 second'), "
                  "('score', 'm', '', '', 2, 3, 3, 'gone:1', now() - interval '1 second'), "
                  "('score', 'm', '', '', 2, 1, 3, 'alive:2', now() + interval '1 hour')")
                  .ok());
  // Started with a planner whose registry has no models: the requeued job fails to plan
  // (NOT_FOUND) on its second attempt; that is this test's evidence that it was claimed again.
  ModelRegistry registry(std::filesystem::temp_directory_path().string(), 1 << 20);
  PlanContext planner;
  planner.registry = &registry;
  a->Start(&planner);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  absl::StatusOr<v1::Job> first, last;
  while (std::chrono::steady_clock::now() < deadline) {
    first = a->Get("job-000001");
    last = a->Get("job-000002");
    if (first.ok() && last.ok() && JobStore::Finished(*first) && JobStore::Finished(*last)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(first.ok() && last.ok());
  EXPECT_EQ(last->state(), v1::Job::FAILED);
  EXPECT_EQ(last->error_code(), static_cast<int>(absl::StatusCode::kAborted));
  EXPECT_NE(last->error_message().find("gone:1"), std::string::npos) << last->error_message();
  EXPECT_EQ(last->attempts(), 3);
  EXPECT_EQ(first->state(), v1::Job::FAILED);
  EXPECT_EQ(first->attempts(), 2);
  EXPECT_EQ(first->replica(), "unit-test");
  EXPECT_EQ(first->error_code(), static_cast<int>(absl::StatusCode::kInvalidArgument))
      << first->error_message();  // its stored request is not a ScoreRequest
  // The live replica's claim is left alone.
  auto alive = a->Get("job-000003");
  ASSERT_TRUE(alive.ok());
  EXPECT_EQ(alive->state(), v1::Job::RUNNING);
  EXPECT_EQ(alive->replica(), "alive:2");
}

TEST_F(PostgresJobStoreTest, FinishedJobsArePrunedByAgeAndCountWithTheirParts) {
  JobRetention keep;
  keep.max_age = std::chrono::hours(1);
  keep.max_finished = 2;
  auto a = Open(16, keep);
  ASSERT_NE(a, nullptr);
  // Finished 2 h, 3 min, 2 min and 1 min ago (the second a fanned-out job with two parts), and
  // one queued.
  ASSERT_TRUE(Sql("INSERT INTO superweight_jobs (kind, model, request, model_identity, state, "
                  "max_attempts, finished_at, parts) VALUES "
                  "('score', 'm', '', '', 3, 3, now() - interval '2 hours', 0), "
                  "('ablate', 'm', '', '', 3, 3, now() - interval '3 minutes', 2), "
                  "('score', 'm', '', '', 4, 3, now() - interval '2 minutes', 0), "
                  "('score', 'm', '', '', 5, 3, now() - interval '1 minute', 0), "
                  "('score', 'm', '', '', 1, 3, NULL, 0)")
                  .ok());
  ASSERT_TRUE(Sql("INSERT INTO superweight_jobs (kind, model, request, model_identity, state, "
                  "max_attempts, finished_at, parent_seq, part) VALUES "
                  "('ablate', 'm', '', '', 3, 3, now() - interval '4 minutes', 2, 0), "
                  "('ablate', 'm', '', '', 3, 3, now() - interval '4 minutes', 2, 1)")
                  .ok());
  ModelRegistry registry(std::filesystem::temp_directory_path().string(), 1 << 20);
  PlanContext planner;
  planner.registry = &registry;
  // Nothing to claim that plans: the queued job is cancelled first.
  ASSERT_TRUE(a->Cancel("job-000005").ok());
  a->Start(&planner);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  absl::StatusOr<pg::Result> left;
  while (std::chrono::steady_clock::now() < deadline) {
    left = Sql("SELECT seq FROM superweight_jobs ORDER BY seq");
    if (left.ok() && left->rows() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->rows(), 2);
  // The two newest finished: job 5 (cancelled just now) and job 4; the fanned-out job went with
  // its parts, and parts never counted against the retention themselves.
  EXPECT_EQ(left->Int(0, 0), 4);
  EXPECT_EQ(left->Int(1, 0), 5);
}

}  // namespace
}  // namespace superweight::server
