// superweightd: the superweight gRPC server.
#include <malloc.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "cli/command_line.h"
#include "engine/runtime/cpu.h"
#include "engine/util/build_info.h"
#include "engine/util/publish.h"
#include "engine/util/utf8_prefix.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "server/directory_lock.h"
#include "server/jobs/job_queue.h"
#include "server/jobs/postgres_job_store.h"
#include "server/service.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC address to listen on");
ABSL_FLAG(std::string, model_root, "models", "directory the served models live under");
ABSL_FLAG(std::string, metrics_listen, "", "host:port for Prometheus /metrics (empty: off)");
ABSL_FLAG(std::string, state_dir, "", "where job results persist across restarts (empty: none)");
ABSL_FLAG(std::string, job_store, "",
          "postgresql://USER@HOST:PORT/DB: replicas share this PostgreSQL job store (empty: the "
          "file store in --state_dir; the SUPERWEIGHT_JOB_STORE environment variable, read when "
          "this is empty, keeps a password off the command line)");
ABSL_FLAG(int32_t, job_lease_seconds, 30,
          "shared store: how long a replica's claim on a job holds unless renewed (renewed "
          "every third of it); a job whose replica stops renewing runs again elsewhere");
ABSL_FLAG(int32_t, job_max_attempts, 3,
          "shared store: times a job is claimed before a lost lease fails it");
ABSL_FLAG(int32_t, max_tokens, 8192, "tokens per request (sequences scored or located)");
ABSL_FLAG(int32_t, max_text_tokens, 1 << 20, "tokens of a text scored for perplexity");
ABSL_FLAG(int32_t, max_queued_jobs, 256, "jobs waiting before requests are refused");
ABSL_FLAG(int32_t, max_batch_sequences, 32, "sequences per batched forward pass (1: no batching)");
// A record is ~36 KB (more for long texts): 1000 bound memory and disk whatever the load, and a
// week keeps a result long enough to be fetched.
ABSL_FLAG(absl::Duration, job_retention_age, absl::Hours(24 * 7),
          "finished jobs older than this are dropped, from memory and --state_dir (0: no limit)");
ABSL_FLAG(int32_t, job_retention_count, 1000,
          "most finished jobs kept, the newest (0: no limit); queued and running ones always are");
// Each WatchJob stream holds a thread (~0.2 MiB resident): 64 bound them to ~13 MiB.
ABSL_FLAG(int32_t, max_watchers, 64,
          "WatchJob streams open at once (at least 1); more are refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, memory_budget_mb, 16384, "mapped bytes of open models before eviction");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain (with --tls_key: serve TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");
ABSL_FLAG(std::string, token_file, "", "file holding the bearer token clients must send");
ABSL_FLAG(std::string, eval_data_dir, SUPERWEIGHT_DEFAULT_EVAL_DATA_DIR,
          "directory of Ablate's evaluation sets (the layout of server/data/eval)");
ABSL_FLAG(std::string, export_root, "",
          "directory Quantize writes exported models to (empty: exports refused); under "
          "--model_root, the server opens them by name at once");
ABSL_FLAG(std::string, confirm_text_file, "",
          "text whose perplexity confirms located super weights (its first 16 KiB are used); "
          "default: the first 16 KiB of WikiText-2's test split, built in");

namespace {

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream f(path, std::ios::binary);
  *ok = static_cast<bool>(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// From SIGTERM to exit at most: calls get 5 s, then the running job stops within a layer.
constexpr std::chrono::seconds kStopDeadline(20);

// The evaluation sets when --eval_data_dir is not given: for an installed server (make dist's
// package) the copy installed beside its binary, in ../share/superweight/eval; for one run from
// its build tree, the source tree's copy it was built from.
std::string EvalDataDir(const std::set<std::string>& given) {
  const std::string flag = absl::GetFlag(FLAGS_eval_data_dir);
  if (given.count("eval_data_dir")) return flag;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return flag;
  std::string dir(exe, n);
  dir.resize(dir.rfind('/'));
  const std::string installed = dir + "/../share/superweight/eval";
  struct stat st;
  return ::stat(installed.c_str(), &st) == 0 ? installed : flag;
}

}  // namespace

int main(int argc, char** argv) {
  // glibc raises its mmap threshold to the largest buffer freed so far (up to 32 MiB), after which
  // a long request's activations come from the threads' arenas and stay there, fragmented: the
  // soak's memory doubled. A fixed threshold keeps every large buffer a mapping of its own,
  // returned when freed.
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  absl::StatusOr<superweight::cli::CommandLine> command_line =
      superweight::cli::Parse(argc, argv, {});
  if (command_line.ok() && command_line->help) {
    std::cout << "usage: superweightd --listen=HOST:PORT --model_root=DIR [flags]\n"
                 "       superweightd --version\n\n";
    for (const std::string& flag : superweight::cli::FlagsDefinedIn("server/main.cc")) {
      std::cout << superweight::cli::FlagHelp(flag);
    }
    std::cout << "\nExit codes: 0 stopped by SIGINT or SIGTERM, 2 a flag, file or directory it "
                 "cannot use (said on stderr).\n";
    return 0;
  }
  if (command_line.ok() && command_line->version) {
    std::cout << superweight::VersionLine("superweightd",
                                          superweight::IsaName(superweight::Cpu().active))
              << "\n";
    return 0;
  }
  if (command_line.ok() && !command_line->positional.empty()) {
    command_line = absl::InvalidArgumentError("takes no arguments, only flags: " +
                                              command_line->positional[0]);
  }
  if (!command_line.ok()) {
    std::cerr << "superweightd: " << command_line.status().message()
              << " (--help lists the flags)\n";
    return 2;
  }
  namespace sws = superweight::server;
  // SIGINT/SIGTERM are taken by sigwait() on a thread of ours, never by a handler: blocked here,
  // before any thread starts, so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The CPU class is decided before anything else runs (and caps oneDNN): a bad
  // SUPERWEIGHT_MAX_ISA or a CPU below the baseline is refused here, not in a request.
  if (const absl::Status cpu = superweight::Cpu().problem; !cpu.ok()) {
    std::cerr << "superweightd: " << cpu.message() << "\n";
    return 2;
  }

  sws::ServiceOptions options;
  options.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.max_text_tokens = absl::GetFlag(FLAGS_max_text_tokens);
  options.eval_data_dir = EvalDataDir(command_line->given);
  options.max_watchers = absl::GetFlag(FLAGS_max_watchers);
  if (options.max_watchers < 1) {
    std::cerr << "superweightd: --max_watchers must be at least 1\n";
    return 2;
  }
  // Both canonical, so that an export's registry name is its path below the model root.
  {
    const std::string dir = absl::GetFlag(FLAGS_model_root);
    char* root = ::realpath(dir.c_str(), nullptr);
    struct stat st;
    if (root == nullptr || ::stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
      std::cerr << "superweightd: --model_root " << dir << " is not a directory"
                << (root == nullptr ? std::string(": ") + std::strerror(errno) : "") << "\n";
      ::free(root);
      return 2;
    }
    options.model_root = root;
    ::free(root);
  }
  if (!absl::GetFlag(FLAGS_export_root).empty()) {
    const std::string dir = absl::GetFlag(FLAGS_export_root);
    ::mkdir(dir.c_str(), 0755);  // one level; its parent must exist
    char* root = ::realpath(dir.c_str(), nullptr);
    struct stat st;
    if (root == nullptr || ::stat(root, &st) != 0 || !S_ISDIR(st.st_mode) ||
        ::access(root, W_OK) != 0) {
      std::cerr << "superweightd: --export_root " << dir << " is not a writable directory\n";
      ::free(root);
      return 2;
    }
    options.export_root = root;
    ::free(root);
  }
  bool ok = true;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    options.bearer_token =
        std::string(absl::StripAsciiWhitespace(ReadFile(absl::GetFlag(FLAGS_token_file), &ok)));
    if (!ok || options.bearer_token.empty()) {
      std::cerr << "superweightd: cannot read a token from --token_file\n";
      return 2;
    }
  }
  options.confirm_text = sws::kDefaultConfirmationText;
  if (!absl::GetFlag(FLAGS_confirm_text_file).empty()) {
    options.confirm_text =
        superweight::Utf8Prefix(ReadFile(absl::GetFlag(FLAGS_confirm_text_file), &ok), 16384);
    if (!ok) {
      std::cerr << "superweightd: cannot read --confirm_text_file\n";
      return 2;
    }
  }
  // One live server per state directory and export root: a second would rewrite the first's
  // running jobs as failed, hand out its job ids, and sweep its unpublished exports.
  std::vector<std::unique_ptr<sws::DirectoryLock>> owned;
  for (const auto& [flag, dir, unusable] :
       {std::tuple<std::string, std::string, std::string>{
            "--state_dir", absl::GetFlag(FLAGS_state_dir), "cannot store job records"},
        {"--export_root", options.export_root, "is not a writable directory"}}) {
    if (dir.empty()) continue;
    absl::Status usable;
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      usable = absl::Status(absl::ErrnoToStatusCode(errno), std::strerror(errno));
    } else if (owned.empty() || !owned.front()->Holds(dir)) {
      auto lock = sws::DirectoryLock::Acquire(dir, flag);
      if (lock.ok()) {
        owned.push_back(std::move(*lock));
      } else if (absl::IsUnavailable(lock.status())) {  // another server holds it
        std::cerr << "superweightd: " << lock.status().message() << "\n";
        return 2;
      } else {
        usable = lock.status();
      }
    }
    if (!usable.ok()) {
      std::cerr << "superweightd: " << flag << " " << dir << " " << unusable << ": "
                << usable.message() << "\n";
      return 2;
    }
  }
  sws::Metrics metrics;
  if (absl::Status served = metrics.Serve(absl::GetFlag(FLAGS_metrics_listen)); !served.ok()) {
    std::cerr << "superweightd: " << served.message() << "\n";
    return 2;
  }
  if (!options.export_root.empty()) {
    // What a server killed mid-export left (never published): this server owns the root now.
    const int swept = superweight::SweepStaged(options.export_root);
    if (swept > 0) {
      std::cerr << "superweightd: removed " << swept
                << " unpublished export(s) a stopped server left in --export_root\n";
    }
    metrics.RecordStagingSwept(swept);
  }
  sws::ModelRegistry registry(absl::GetFlag(FLAGS_model_root),
                              static_cast<uint64_t>(absl::GetFlag(FLAGS_memory_budget_mb)) << 20);
  const absl::Duration retention_age = absl::GetFlag(FLAGS_job_retention_age);
  if (retention_age < absl::ZeroDuration() || absl::GetFlag(FLAGS_job_retention_count) < 0) {
    std::cerr << "superweightd: --job_retention_age and --job_retention_count must not be "
                 "negative\n";
    return 2;
  }
  sws::JobRetention retention;
  retention.max_age = absl::ToChronoMilliseconds(retention_age);
  retention.max_finished = absl::GetFlag(FLAGS_job_retention_count);
  std::string job_store = absl::GetFlag(FLAGS_job_store);
  if (job_store.empty() && std::getenv("SUPERWEIGHT_JOB_STORE") != nullptr) {
    job_store = std::getenv("SUPERWEIGHT_JOB_STORE");
  }
  const int max_batch = std::max(1, absl::GetFlag(FLAGS_max_batch_sequences));
  std::unique_ptr<sws::JobStore> store;
  sws::PostgresJobStore* shared_store = nullptr;
  if (job_store.empty()) {
    auto files = std::make_unique<sws::JobQueue>(absl::GetFlag(FLAGS_state_dir),
                                                 absl::GetFlag(FLAGS_max_queued_jobs), max_batch,
                                                 retention, &metrics);
    if (!files->StorageStatus().ok()) {
      std::cerr << "superweightd: " << files->StorageStatus().message() << "\n";
      return 2;
    }
    store = std::move(files);
  } else {
    if (absl::GetFlag(FLAGS_job_lease_seconds) < 1 || absl::GetFlag(FLAGS_job_max_attempts) < 1) {
      std::cerr << "superweightd: --job_lease_seconds and --job_max_attempts must be at least 1\n";
      return 2;
    }
    sws::PostgresStoreOptions pg;
    pg.url = job_store;
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    pg.replica = absl::StrFormat("%s:%d", host, ::getpid());
    options.job_store = "postgresql";
    options.replica = pg.replica;
    pg.max_queued = absl::GetFlag(FLAGS_max_queued_jobs);
    pg.max_batch = max_batch;
    pg.lease = std::chrono::seconds(absl::GetFlag(FLAGS_job_lease_seconds));
    pg.max_attempts = absl::GetFlag(FLAGS_job_max_attempts);
    pg.retention = retention;
    auto opened = sws::PostgresJobStore::Open(std::move(pg), &metrics);
    if (!opened.ok()) {
      std::cerr << "superweightd: " << opened.status().message() << "\n";
      return 2;
    }
    shared_store = opened->get();
    store = std::move(*opened);
  }
  sws::SuperWeightService service(&registry, store.get(), &metrics, options);

  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
    bool cert_ok = true, key_ok = true;
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({ReadFile(absl::GetFlag(FLAGS_tls_key), &key_ok),
                                      ReadFile(absl::GetFlag(FLAGS_tls_cert), &cert_ok)});
    if (!cert_ok || !key_ok) {
      std::cerr << "superweightd: cannot read --tls_cert / --tls_key\n";
      return 2;
    }
    creds = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  // gRPC sets SO_REUSEPORT by default: a second server on the same address would start and
  // take part of the traffic. Off, the second one is refused.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), creds, &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(64 << 20);
  // The synchronous server spawns a thread for each call that finds none free: a burst of
  // 1,000 WatchJob calls spawned ~1,000 threads, if only for a moment. Its threads are capped at
  // what waits legitimately (a caller per queued or running job, the watchers) and headroom for
  // quick calls; past that a call waits for a thread, or is RESOURCE_EXHAUSTED if none polls.
  constexpr int kThreadsForQuickCalls = 64;
  grpc::ResourceQuota threads("superweightd");
  threads.SetMaxThreads(absl::GetFlag(FLAGS_max_queued_jobs) + 1 + options.max_watchers +
                        kThreadsForQuickCalls);
  builder.SetResourceQuota(threads);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "superweightd: cannot listen on " << absl::GetFlag(FLAGS_listen) << "\n";
    return 2;
  }
  // A state directory that stops taking records turns the server NOT_SERVING (results would be
  // lost on restart), as does a shared store while it cannot be reached.
  store->OnHealthChange(
      [&server](bool serving) { server->GetHealthCheckService()->SetServingStatus(serving); });
  // Only now, with nothing left to refuse the start: the worker plans with the service's planner.
  if (shared_store != nullptr) shared_store->Start(&service.planner());
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::cerr << "superweightd: stopping\n";
    // Whatever does not stop in time (a call stuck in a system call) does not keep the process:
    // jobs still running then read FAILED at the next start, as after a crash.
    std::thread([] {
      std::this_thread::sleep_for(kStopDeadline);
      std::cerr << "superweightd: not stopped after " << kStopDeadline.count() << " s; exiting\n";
      std::_Exit(1);
    }).detach();
    // A shared store's running jobs go back to the queue for other replicas now, not after the
    // calls drain.
    if (shared_store != nullptr) shared_store->Stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  std::cerr << absl::StrFormat("superweightd %s (git %s): serving %s on port %d, CPU class %s\n",
                               superweight::Version(), superweight::GitRevision(),
                               absl::GetFlag(FLAGS_model_root), port,
                               superweight::CpuDescription());
  server->Wait();
  stopper.join();
  store->OnHealthChange(nullptr);  // the server goes before the store
  store.reset();                   // and the store before the service, whose planner it uses
  return 0;
}
