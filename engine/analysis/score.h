// Scoring: per-token log-probabilities and perplexity over non-overlapping windows.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/runtime/forward.h"

namespace superweight {

// For each sequence, log p(token[t] | token[<t]) for t = 1..T-1 (T-1 values).
absl::StatusOr<std::vector<std::vector<float>>> TokenLogprobs(
    const Model& model, absl::Span<const SequenceInput> batch, Precision precision,
    const std::atomic<bool>* cancelled = nullptr);

// The edits of each sequence of a batch (one EditSet per sequence), given the sequences' tokens:
// fixed edits return the same set for each; restoring the super activation derives each
// sequence's from an intact pass over it (ablate.h). Null: the model as stored.
using BatchEdits = std::function<absl::StatusOr<std::vector<EditSet>>(
    absl::Span<const std::vector<int32_t>> sequences)>;

struct PerplexityOptions {
  int window = 512;       // tokens per window; each window is scored from its first token
  int batch_windows = 4;  // windows per forward pass
  int max_windows = 0;    // 0: all full windows of the text
  Precision precision = Precision::kF32;
  const EditSet* edits = nullptr;  // on every window
  BatchEdits batch_edits;          // or each window's own, where set
  const std::atomic<bool>* cancelled = nullptr;
  std::function<void(double)> on_progress;  // fraction of windows done
};

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;
  int64_t tokens_scored = 0;
  int windows = 0;
};

// Perplexity of a token stream cut into consecutive full windows (a trailing partial window is
// dropped, as the paper's evaluation code does).
absl::StatusOr<PerplexityResult> Perplexity(const Model& model, absl::Span<const int32_t> tokens,
                                            const PerplexityOptions& options);

}  // namespace superweight
