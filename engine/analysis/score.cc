#include "engine/analysis/score.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace superweight {

absl::StatusOr<std::vector<std::vector<float>>> TokenLogprobs(const Model& model,
                                                              absl::Span<const SequenceInput> batch,
                                                              Precision precision) {
  ForwardOptions options;
  options.precision = precision;
  auto out = RunForward(model, batch, options);
  if (!out.ok()) return out.status();
  const int64_t V = model.config.vocab, D = model.config.hidden;
  // Logits a chunk of rows at a time: a 512-token sequence of a 128k-vocabulary model would
  // otherwise need 256 MB of logits.
  constexpr int64_t kChunk = 64;
  std::vector<float> logits(kChunk * V);
  std::vector<std::vector<float>> result(batch.size());
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t first = out->offsets[s], T = out->offsets[s + 1] - first;
    result[s].resize(T - 1);
    for (int64_t t0 = 0; t0 < T - 1; t0 += kChunk) {
      const int64_t rows = std::min(kChunk, T - 1 - t0);
      ComputeLogits(model, &out->hidden[(first + t0) * D], rows, logits.data(), precision);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const float* lr = &logits[r * V];
        const float mx = *std::max_element(lr, lr + V);
        double sum = 0;
        for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(lr[i] - mx));
        const int32_t target = batch[s].tokens[t0 + r + 1];
        result[s][t0 + r] = static_cast<float>(lr[target] - mx - std::log(sum));
      }
    }
  }
  return result;
}

absl::StatusOr<PerplexityResult> Perplexity(const Model& model, absl::Span<const int32_t> tokens,
                                            const PerplexityOptions& options) {
  if (options.window < 2) return absl::InvalidArgumentError("window must be at least 2 tokens");
  int64_t windows = static_cast<int64_t>(tokens.size()) / options.window;
  if (options.max_windows > 0) windows = std::min<int64_t>(windows, options.max_windows);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text has %d tokens, fewer than one %d-token window", tokens.size(), options.window));
  }
  double nll = 0;
  int64_t count = 0;
  const int per_pass = std::max(1, options.batch_windows);
  for (int64_t w0 = 0; w0 < windows; w0 += per_pass) {
    std::vector<SequenceInput> batch;
    for (int64_t w = w0; w < std::min(windows, w0 + per_pass); ++w) {
      batch.push_back({tokens.subspan(w * options.window, options.window), options.edits});
    }
    auto lp = TokenLogprobs(model, batch, options.precision);
    if (!lp.ok()) return lp.status();
    for (const auto& seq : *lp) {
      for (float v : seq) nll -= v;
      count += seq.size();
    }
  }
  PerplexityResult r;
  r.mean_nll = nll / count;
  r.perplexity = std::exp(r.mean_nll);
  r.tokens_scored = count;
  r.windows = static_cast<int>(windows);
  return r;
}

}  // namespace superweight
