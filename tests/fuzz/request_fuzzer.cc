// libFuzzer target: requests as the service receives them, through the checks every RPC makes
// before it does any work. The first byte picks the RPC, the rest is its serialized request:
// Locate, Score, Ablate, Quantize, Check and Recipe go through the service's Plan* (the
// handlers' own checks, up to the job they would queue, which is never queued); GetJob, CancelJob
// and ListJobs through their handlers, against an empty job queue. The models are tiny ones (a
// Hugging Face directory, the same without a tokenizer, a llama2.c checkpoint, a GGUF) in a
// per-process model root; the evaluation sets the first lines of the server's.
//
// The corpus names the models: hf_tinystories_656k, notok, stories260K/stories260K.bin,
// smollm2-tiny.gguf.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "grpcpp/server_context.h"
#include "server/jobs/job_queue.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/service.h"
#include "superweight/v1/superweight.pb.h"
#include "tests/fuzz/scratch_dir.h"

namespace superweight::server {
namespace {

namespace fs = std::filesystem;

// The first `lines` lines of a file.
void CopyHead(const fs::path& from, const fs::path& to, int lines) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  std::string line;
  for (int i = 0; i < lines && std::getline(in, line); ++i) out << line << '\n';
}

// A server's state around the service: built once per process, its directory removed at exit.
class FuzzedServer {
 public:
  FuzzedServer() : scratch_("request-fuzzer"), dir_(scratch_.path()) {
    // Protobuf logs every request it refuses to parse (invalid UTF-8 in a string field):
    // thousands of lines a second here, and the refusal is what is expected.
    google::protobuf::SetLogHandler(nullptr);
    const fs::path testdata = SUPERWEIGHT_TESTDATA;
    const fs::path models = dir_ / "models";
    fs::create_directories(models / "hf_tinystories_656k");
    fs::create_directories(models / "notok");
    fs::create_directories(models / "stories260K");
    fs::create_directories(models / "exports");
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
      fs::copy_file(testdata / "hf_tinystories_656k" / f, models / "hf_tinystories_656k" / f);
    }
    for (const char* f : {"config.json", "model.safetensors"}) {
      fs::copy_file(testdata / "hf_tinystories_656k" / f, models / "notok" / f);
    }
    for (const char* f : {"stories260K.bin", "tok512.bin"}) {
      fs::copy_file(testdata / "stories260K" / f, models / "stories260K" / f);
    }
    // A GGUF model: SmolLM2's metadata on tiny tensors, from the gguf fuzzer's seeds.
    fs::copy_file(fs::path(SUPERWEIGHT_FUZZ_CORPUS) / "gguf" / "seed-smollm2-tiny-q4_1.gguf",
                  models / "smollm2-tiny.gguf");
    // Twelve lines: whole examples of every task (HellaSwag's take six), short to tokenize.
    const fs::path eval_source = SUPERWEIGHT_EVAL_DATA;
    for (const auto& entry : fs::recursive_directory_iterator(eval_source)) {
      if (!entry.is_regular_file()) continue;
      const fs::path to = dir_ / "eval" / fs::relative(entry.path(), eval_source);
      fs::create_directories(to.parent_path());
      CopyHead(entry.path(), to, 12);
    }
    registry_ = std::make_unique<ModelRegistry>(models.string(), uint64_t{1} << 32);
    jobs_ = std::make_unique<JobQueue>("", 16, 1, JobRetention{}, &metrics_);
    ServiceOptions options;
    options.max_tokens = 512;  // the server's 8192 would only make the harness slower
    options.max_text_tokens = 4096;
    options.confirm_text = "Once upon a time there was a little dog. It liked to play.";
    options.eval_data_dir = (dir_ / "eval").string();
    options.model_root = models.string();
    options.export_root = (models / "exports").string();
    service_ =
        std::make_unique<SuperWeightService>(registry_.get(), jobs_.get(), &metrics_, options);
  }
  SuperWeightService& service() { return *service_; }

 private:
  fuzz::ScratchDir scratch_;  // first, so removed last: after the service and the models
  fs::path dir_;
  Metrics metrics_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<JobQueue> jobs_;
  std::unique_ptr<SuperWeightService> service_;
};

template <typename Request>
bool Parse(const uint8_t* data, size_t size, Request* request) {
  return request->ParseFromArray(data, static_cast<int>(size));
}

// A plan that succeeded holds what its job would run on.
void CheckPlan(const absl::StatusOr<JobWork>& work) {
  if (work.ok() && work->model == nullptr) abort();
}

// -1 where the bytes are no request of that RPC (libFuzzer keeps no such input).
int Run(SuperWeightService& service, uint8_t rpc, const uint8_t* data, size_t size) {
  switch (rpc % 9) {
    case 0: {
      v1::LocateRequest r;
      if (!Parse(data, size, &r)) return -1;
      CheckPlan(PlanLocate(service.planner(), r));
      return 0;
    }
    case 1: {
      v1::ScoreRequest r;
      if (!Parse(data, size, &r)) return -1;
      CheckPlan(PlanScore(service.planner(), r));
      return 0;
    }
    case 2: {
      v1::AblateRequest r;
      if (!Parse(data, size, &r)) return -1;
      CheckPlan(PlanAblate(service.planner(), r));
      return 0;
    }
    case 3: {
      v1::QuantizeRequest r;
      if (!Parse(data, size, &r)) return -1;
      CheckPlan(PlanQuantize(service.planner(), r));
      return 0;
    }
    case 4: {
      v1::CheckRequest r;
      if (!Parse(data, size, &r)) return -1;
      CheckPlan(PlanCheck(service.planner(), r));
      return 0;
    }
    case 5: {
      v1::GetJobRequest r;
      if (!Parse(data, size, &r)) return -1;
      grpc::ServerContext ctx;
      v1::Job job;
      service.GetJob(&ctx, &r, &job);
      return 0;
    }
    case 6: {
      v1::CancelJobRequest r;
      if (!Parse(data, size, &r)) return -1;
      grpc::ServerContext ctx;
      v1::Job job;
      service.CancelJob(&ctx, &r, &job);
      return 0;
    }
    case 8: {
      v1::RecipeRequest r;
      if (!Parse(data, size, &r)) return -1;
      CheckPlan(PlanRecipe(service.planner(), r));
      return 0;
    }
    default: {
      v1::ListJobsRequest r;
      if (!Parse(data, size, &r)) return -1;
      grpc::ServerContext ctx;
      v1::ListJobsResponse response;
      service.ListJobs(&ctx, &r, &response);
      return 0;
    }
  }
}

}  // namespace
}  // namespace superweight::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static superweight::server::FuzzedServer server;
  if (size < 1) return -1;
  return superweight::server::Run(server.service(), data[0], data + 1, size - 1);
}
