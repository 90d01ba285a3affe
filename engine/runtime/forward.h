// The transformer forward pass on the CPU: several sequences per batch, linear layers on
// oneDNN over all tokens of the batch at once, attention per sequence.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/model.h"
#include "engine/runtime/edit_set.h"
#include "engine/runtime/matmul.h"
#include "engine/runtime/tap.h"

namespace superweight {

struct SequenceInput {
  absl::Span<const int32_t> tokens;
  const EditSet* edits = nullptr;  // per sequence, so differently-ablated requests batch
};

struct ForwardOptions {
  Precision precision = Precision::kF32;
  ForwardTap* tap = nullptr;
  // Checked before every layer: a set flag ends the pass with CANCELLED within one layer.
  const std::atomic<bool>* cancelled = nullptr;
};

struct ForwardOutput {
  // Final-normed hidden states of all tokens, [total tokens, hidden], sequence after sequence.
  std::vector<float> hidden;
  std::vector<int64_t> offsets;  // first row of each sequence; offsets.back() = total
};

absl::StatusOr<ForwardOutput> RunForward(const Model& model, absl::Span<const SequenceInput> batch,
                                         const ForwardOptions& options);

// logits[rows, vocab] = hidden[rows, hidden] * lm_head^T.
absl::Status ComputeLogits(const Model& model, const float* hidden, int64_t rows, float* logits,
                           Precision precision);

}  // namespace superweight
