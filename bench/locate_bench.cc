// Locate's speed: the time of one profiling pass against the memory-bandwidth bound (the bytes of
// every layer's weights over the read bandwidth measured in the same run), and the confirmation
// batched (Locate's, one PerplexityPerSetting) against the loop it replaced (one perplexity for
// the intact model, then one per candidate alone). Prints one JSON line.
//   superweight-bench-locate MODEL [--bf16] [--reps=5] [--threshold=50] [--prompt_tokens=N]
//                            [--confirm_file=TEXT] [--against_onednn_f32]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "bench/bench_flags.h"
#include "engine/analysis/locate.h"
#include "engine/analysis/score.h"
#include "engine/model/model.h"
#include "engine/runtime/matmul.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace sw = superweight;

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Read bandwidth, bytes/s: the best of `reps` parallel sums over 1 GiB (far past any cache),
// with the threads the forward pass uses; integer sums, which the compiler vectorizes (a float
// sum in order is bound by the adder's latency, not by memory).
double ReadBandwidth(int reps) {
  std::vector<uint64_t> buffer((size_t{1} << 30) / sizeof(uint64_t));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = i & 7;
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (size_t i = 0; i < buffer.size(); ++i) sum += buffer[i];
    const double s = Seconds(t0);
    if (sum == 1) std::cerr << sum;  // keeps the loop
    best = std::max(best, static_cast<double>(buffer.size() * sizeof(uint64_t)) / s);
  }
  return best;
}

// Bytes of every matrix a profiling pass reads: each layer's linear weights, routers and experts
// (not the embeddings, of which it reads the prompt's rows, nor the lm_head, which it skips).
double LayerWeightBytes(const sw::Model& model) {
  double bytes = 0;
  auto add = [&](const sw::Matrix& m) { bytes += static_cast<double>(m.rows) * m.row_bytes; };
  for (const sw::LayerWeights& layer : model.layers) {
    for (const sw::Matrix& m : layer.linear) add(m);
    add(layer.router);
    for (const sw::ExpertWeights& e : layer.experts) {
      add(e.gate);
      add(e.up);
      add(e.down);
    }
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: superweight-bench-locate MODEL [--bf16] [--reps=5] [--threshold=50] "
                 "[--prompt_tokens=N] [--confirm_file=TEXT] [--against_onednn_f32]\n";
    return 2;
  }
  std::map<std::string, std::string> flags = superweight::bench::ParseFlags(argc, argv, 2);
  int reps = 5;
  sw::LocateOptions lo;
  if ((flags.count("reps") && !absl::SimpleAtoi(flags["reps"], &reps)) ||
      (flags.count("threshold") && !absl::SimpleAtof(flags["threshold"], &lo.threshold))) {
    std::cerr << "bad flag\n";
    return 2;
  }
  lo.precision = flags.count("bf16") ? sw::Precision::kBF16 : sw::Precision::kF32;
  auto opened = sw::OpenModel(argv[1]);
  if (!opened.ok()) {
    std::cerr << opened.status() << "\n";
    return 1;
  }
  const sw::Model& model = **opened;
  std::vector<int32_t> prompt;
  if (model.tokenizer != nullptr) {
    prompt = model.tokenizer->Encode(sw::kPaperPrompt, model.config.add_bos);
  } else {
    for (int32_t t = 1; t <= 10; ++t) prompt.push_back(t);  // a generated model has no tokenizer
  }
  int prompt_tokens = 0;  // --prompt_tokens=N: the prompt cut or repeated to N tokens
  if (flags.count("prompt_tokens") && absl::SimpleAtoi(flags["prompt_tokens"], &prompt_tokens) &&
      prompt_tokens > 0) {
    std::vector<int32_t> resized;
    for (int i = 0; i < prompt_tokens; ++i) resized.push_back(prompt[i % prompt.size()]);
    prompt = resized;
  }
  const double bandwidth = ReadBandwidth(5);
  const double weight_bytes = LayerWeightBytes(model);

  // Profiling passes: Locate without confirmation, warm, best of `reps` per pass. With
  // --against_onednn_f32 each rep also times the passes with the FMA units' matmuls on oneDNN
  // (SUPERWEIGHT_ONEDNN_F32's path), the two in alternating order, and the median of the per-rep
  // ratios is printed: this machine's speed drifts more than the difference between whole runs.
  const bool against_onednn = flags.count("against_onednn_f32") > 0;
  double best_pass = 1e30, best_onednn = 1e30, matmul_share = 0;
  int iterations = 0, candidates = 0;
  std::vector<double> ratios;
  auto time_pass = [&](bool onednn, bool keep_stats) {
    sw::internal::UseOneDnnF32(onednn);
    sw::ResetLinearStats();
    const auto t0 = std::chrono::steady_clock::now();
    auto located = sw::Locate(model, prompt, lo);
    const double s = Seconds(t0);
    sw::internal::UseOneDnnF32(false);
    if (!located.ok()) {
      std::cerr << located.status() << "\n";
      return -1.0;
    }
    const double pass = s / located->iterations;
    if (keep_stats && pass < best_pass) {
      const sw::LinearStats stats = sw::GetLinearStats();
      matmul_share = (stats.nanos + stats.input_nanos) * 1e-9 / s;
    }
    iterations = located->iterations;
    candidates = static_cast<int>(located->candidates.size());
    return pass;
  };
  for (int r = 0; r <= reps; ++r) {  // r = 0 warms up
    double pass = 0, onednn = 0;
    if (against_onednn && r % 2 == 1) onednn = time_pass(true, false);
    pass = time_pass(false, r > 0);
    if (against_onednn && r % 2 == 0) onednn = time_pass(true, false);
    if (pass < 0 || onednn < 0) return 1;
    if (r == 0) continue;
    best_pass = std::min(best_pass, pass);
    if (against_onednn) {
      best_onednn = std::min(best_onednn, onednn);
      ratios.push_back(onednn / pass);
    }
  }
  nlohmann::json out = {{"model", model.name},
                        {"precision", sw::PrecisionName(lo.precision)},
                        {"threads", omp_get_max_threads()},
                        {"prompt_tokens", prompt.size()},
                        {"iterations", iterations},
                        {"candidates", candidates},
                        {"read_gb_per_s", bandwidth / 1e9},
                        {"layer_weight_mb", weight_bytes / 1e6},
                        {"pass_ms", best_pass * 1e3},
                        {"matmul_share", matmul_share},
                        {"bandwidth_bound_ms", weight_bytes / bandwidth * 1e3},
                        {"pass_over_bound", best_pass / (weight_bytes / bandwidth)}};
  if (against_onednn) {
    std::sort(ratios.begin(), ratios.end());
    out["onednn_f32_pass_ms"] = best_onednn * 1e3;
    out["speedup_over_onednn_f32_median"] = ratios[ratios.size() / 2];
    out["speedup_over_onednn_f32_quartiles"] = {ratios[ratios.size() / 4],
                                                ratios[ratios.size() * 3 / 4]};
  }

  if (flags.count("confirm_file") && model.tokenizer != nullptr) {
    std::ifstream f(flags["confirm_file"], std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    lo.confirm_tokens = model.tokenizer->Encode(ss.str().substr(0, 20000), model.config.add_bos);
    auto located = sw::Locate(model, prompt, lo);
    if (!located.ok() || located->candidates.empty()) {
      std::cerr << "no candidates to confirm\n";
      return 1;
    }
    // Batched: Locate with confirmation, less its search (the same passes as above).
    double batched = 1e30, loop = 1e30;
    bool same = true;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      auto confirmed = sw::Locate(model, prompt, lo);
      if (!confirmed.ok()) {
        std::cerr << confirmed.status() << "\n";
        return 1;
      }
      batched = std::min(batched, Seconds(t0) - best_pass * confirmed->iterations);
      // The loop: the intact perplexity, then each candidate zeroed alone.
      t0 = std::chrono::steady_clock::now();
      sw::PerplexityOptions po;
      po.window = lo.confirm_window;
      po.max_windows = lo.confirm_max_windows;
      po.precision = lo.precision;
      auto intact = sw::Perplexity(model, lo.confirm_tokens, po);
      same = same && intact.ok() && intact->perplexity == confirmed->perplexity_intact;
      for (const sw::SuperWeight& c : confirmed->candidates) {
        sw::EditSet one;
        one.weights.push_back({c.layer, sw::LinearKind::kDown, c.row, c.col, 0.f, c.expert});
        po.edits = &one;
        auto zeroed = sw::Perplexity(model, lo.confirm_tokens, po);
        same = same && zeroed.ok() && zeroed->perplexity == c.perplexity_zeroed;
      }
      loop = std::min(loop, Seconds(t0));
    }
    out["confirm_candidates"] = located->candidates.size();
    out["confirm_windows"] = lo.confirm_max_windows;
    out["confirm_batched_s"] = batched;
    out["confirm_loop_s"] = loop;
    out["confirm_speedup"] = loop / batched;
    out["confirm_same_perplexities"] = same;
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
