// The engine's side of the scoring benchmark: opens a model, scores sequences of random tokens
// and prints one JSON line with tokens/s, the matmul throughput inside the forward pass, open
// time and memory. bench/score_throughput.py runs it next to transformers.
//   superweight-bench-score MODEL --tokens=512 --sequences=4 --batch=1 [--bf16]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>

#include "absl/strings/numbers.h"
#include "bench/bench_flags.h"
#include "engine/analysis/score.h"
#include "engine/model/model.h"
#include "engine/runtime/amx_gemm.h"
#include "engine/runtime/matmul.h"
#include "nlohmann/json.hpp"

namespace sw = superweight;

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// kB of a field of /proc/self/status (VmHWM: peak RSS, RssAnon: anonymous memory).
int64_t StatusKb(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: superweight-bench-score MODEL [--tokens=N] [--sequences=N] [--batch=N] "
                 "[--bf16]\n(SUPERWEIGHT_MAX_ISA=avx2|avx512|avx512_bf16|amx caps the CPU class)\n";
    return 2;
  }
  std::map<std::string, std::string> flags = superweight::bench::ParseFlags(argc, argv, 2);
  int tokens = 512, sequences = 4, batch = 1;
  if ((flags.count("tokens") && !absl::SimpleAtoi(flags["tokens"], &tokens)) ||
      (flags.count("sequences") && !absl::SimpleAtoi(flags["sequences"], &sequences)) ||
      (flags.count("batch") && !absl::SimpleAtoi(flags["batch"], &batch))) {
    std::cerr << "bad flag\n";
    return 2;
  }
  const sw::Precision precision = flags.count("bf16") ? sw::Precision::kBF16 : sw::Precision::kF32;
  const int64_t anon_before_open = StatusKb("RssAnon");
  auto t0 = std::chrono::steady_clock::now();
  auto model = sw::OpenModel(argv[1]);
  const double open_s = Seconds(t0);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> dist(3, (*model)->config.vocab - 1);
  std::vector<std::vector<int32_t>> seqs(sequences, std::vector<int32_t>(tokens));
  for (auto& s : seqs) {
    for (auto& t : s) t = dist(rng);
  }
  auto score = [&](int first, int count) {
    std::vector<sw::SequenceInput> in;
    for (int i = first; i < first + count; ++i) in.push_back({seqs[i], nullptr});
    auto r = sw::TokenLogprobs(**model, in, precision);
    if (!r.ok()) {
      std::cerr << r.status() << "\n";
      std::exit(1);
    }
  };
  score(0, 1);  // warm-up: primitive creation, page faults of the mapping
  sw::ResetLinearStats();
  double run_s = 0;
  int scored = 0;
  if (flags.count("serve")) {
    // Paired benchmarking: one pass of --batch sequences per line read from stdin, its seconds
    // (and its matmul throughput) printed at once, so that a driver can alternate this process
    // with a peer's, and with oneDNN alone, a pass at a time.
    std::cout << "{\"ready\":true}" << std::endl;
    for (std::string line; std::getline(std::cin, line);) {
      const sw::LinearStats before = sw::GetLinearStats();
      const int first = scored % sequences, count = std::min(batch, sequences - first);
      t0 = std::chrono::steady_clock::now();
      score(first, count);
      const double s = Seconds(t0);
      run_s += s;
      scored += count;
      const sw::LinearStats after = sw::GetLinearStats();
      const double flops = static_cast<double>(after.flops - before.flops);
      const int64_t matmul = after.nanos - before.nanos;
      const int64_t inputs = after.input_nanos - before.input_nanos;
      std::cout << nlohmann::json({{"seconds", s},
                                   {"linear_gflops", flops / std::max<int64_t>(1, matmul)},
                                   {"linear_gflops_with_inputs",
                                    flops / std::max<int64_t>(1, matmul + inputs)}})
                       .dump()
                << std::endl;
    }
  } else {
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < sequences; i += batch) score(i, std::min(batch, sequences - i));
    run_s = Seconds(t0);
    scored = sequences;
  }
  const sw::LinearStats stats = sw::GetLinearStats();
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  nlohmann::json out = {
      {"tokens_per_s", tokens * scored / run_s},
      {"seconds", run_s},
      {"linear_gflops", stats.flops / (stats.nanos * 1e-9) / 1e9},
      {"linear_gflops_with_inputs", stats.flops / ((stats.nanos + stats.input_nanos) * 1e-9) / 1e9},
      {"linear_share", stats.nanos * 1e-9 / run_s},
      {"open_ms", open_s * 1e3},
      {"peak_rss_mb", ru.ru_maxrss / 1024.0},
      {"anon_mb", (StatusKb("RssAnon") - anon_before_open) / 1024.0},
      {"mapped_mb", (*model)->MappedBytes() / 1048576.0},
      {"precision", sw::PrecisionName(precision)}};
  std::cout << out.dump() << std::endl;
  return 0;
}
