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
// The same from the batch's forward pass, already run.
absl::StatusOr<std::vector<std::vector<float>>> TokenLogprobs(const Model& model,
                                                              absl::Span<const SequenceInput> batch,
                                                              const ForwardOutput& forward,
                                                              Precision precision);

// The edits of each sequence of a batch (one EditSet per sequence), given the sequences' tokens
// and the intact model's pass over them (run as far as a hook asks, and shared with the batch's
// other settings where several are evaluated together; where the batch holds trees, the pass is
// over the trees and `sequences` are its views, which its taps report as they do sequences): fixed
// edits return the same set for each; restoring the super activation derives each sequence's from
// what the intact pass shows (ablate.h). Null: the model as stored.
using BatchEdits = std::function<absl::StatusOr<std::vector<EditSet>>(
    absl::Span<const std::vector<int32_t>> sequences, IntactPass* intact)>;
// Fixed edits: `edits` on every sequence.
BatchEdits SameEditsEverySequence(EditSet edits);

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

// The same under each of several settings at once (settings[i]: the i-th's edits; null: the
// model as stored; options.edits and batch_edits are not read), batch after batch: each batch's
// intact pass is shared up to the first layer a setting edits, then each setting's pass
// continues on its own. Each result is bit for bit what Perplexity gives the setting alone: the
// batches are the same. on_progress counts a batch's settings as they finish.
absl::StatusOr<std::vector<PerplexityResult>> PerplexityPerSetting(
    const Model& model, absl::Span<const int32_t> tokens, const PerplexityOptions& options,
    absl::Span<const BatchEdits> settings);

// Each setting's edits of a batch from its hook (none without one), checked to be one per
// sequence.
absl::StatusOr<std::vector<EditSet>> EditsOfBatch(const BatchEdits& edits,
                                                  absl::Span<const std::vector<int32_t>> sequences,
                                                  IntactPass* intact);

// The order in which a batch's settings continue from its intact pass: by the first layer their
// edits touch, so that the shared stream only moves forward.
std::vector<size_t> SharingOrder(const Model& model,
                                 absl::Span<const std::vector<EditSet>> setting_edits);

// One batch's passes under several settings (setting_edits[s]: one edit set per sequence), each
// continuing from the furthest stream it shares: the intact pass below its first edited layer,
// or the pass of a setting run before it below the first layer where their edits part (the two
// outlier settings of Ablate edit every layer alike, one also prunes a later super weight: they
// share the layers between). Each output is bit for bit the setting's pass alone. A stream
// another setting continues from is kept until that setting has run.
class SettingPasses {
 public:
  // `batch`: the sequences without edits (the intact pass's); all must outlive this.
  SettingPasses(const Model& model, absl::Span<const SequenceInput> batch,
                absl::Span<const std::vector<EditSet>> setting_edits, IntactPass* intact,
                const ForwardOptions& options);
  // The settings in the order they run (SharingOrder).
  const std::vector<size_t>& order() const { return order_; }
  // The layer the pass of setting order()[k] starts at (below it, it shares another's).
  int StartLayer(size_t k) const { return start_[k]; }
  // The pass of setting order()[k]; k = 0, 1, ... in turn.
  absl::StatusOr<ForwardOutput> Run(size_t k);

 private:
  const Model& model_;
  std::vector<SequenceInput> batch_;
  absl::Span<const std::vector<EditSet>> setting_edits_;
  IntactPass* intact_;
  ForwardOptions options_;
  std::vector<size_t> order_;
  std::vector<int> start_;               // per position: the layer its pass starts at
  std::vector<int> source_;              // per position: whose stream (-1: the intact pass)
  std::vector<std::vector<int>> saves_;  // per position: layers where a later one continues
  std::vector<std::vector<std::pair<int, ResidualStream>>> kept_;  // per position: (layer, stream)
  std::vector<int> readers_;  // per position: later positions still to read its streams
};

}  // namespace superweight
