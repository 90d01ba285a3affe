// The transformer forward pass on the CPU: several sequences per batch, linear layers on
// oneDNN over all tokens of the batch at once, attention per sequence.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/model.h"
#include "engine/runtime/aligned_vector.h"
#include "engine/runtime/edit_set.h"
#include "engine/runtime/matmul.h"
#include "engine/runtime/tap.h"

namespace superweight {

struct SequenceInput {
  SequenceInput() = default;
  SequenceInput(absl::Span<const int32_t> tokens, const EditSet* edits = nullptr,
                absl::Span<const int64_t> branches = {})
      : tokens(tokens), edits(edits), branches(branches) {}

  absl::Span<const int32_t> tokens;
  const EditSet* edits = nullptr;  // per sequence (a tree's in its rows), so that
                                   // differently-ablated requests batch
  // A tree: one prefix continued several ways (a multiple-choice example's context and its
  // choices). `tokens` holds the prefix, then each branch's tokens, branch after branch;
  // branches[b] is the b-th's length. A branch takes the positions after the prefix and attends
  // to the prefix and to itself only, so each of its rows is the row the sequence prefix + branch
  // computes alone, and the prefix runs once. Empty: a plain sequence.
  absl::Span<const int64_t> branches;
};

// What a batch stands for: one view per plain sequence and one per branch of a tree (the tree's
// prefix rows, then the branch's). Taps (tap.h) see views as sequences, numbered in this order.
struct SequenceView {
  int sequence = 0;          // in the batch
  int64_t prefix = 0;        // the view's rows [0, prefix) are the sequence's rows [0, prefix)
  int64_t branch_begin = 0;  // and its rows from prefix on, the sequence's from branch_begin
  int64_t branch_rows = 0;
  int64_t size() const { return prefix + branch_rows; }
  // The sequence's row of the view's row (position) p.
  int64_t RowOf(int64_t p) const { return p < prefix ? p : branch_begin + p - prefix; }
};
std::vector<SequenceView> ViewsOf(absl::Span<const SequenceInput> batch);

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

// The whole pass: EmbedBatch, RunLayers through the last layer, FinishForward.
absl::StatusOr<ForwardOutput> RunForward(const Model& model, absl::Span<const SequenceInput> batch,
                                         const ForwardOptions& options);

// Passes keep the large buffers they free for the next pass of the same shapes
// (aligned_vector.h, up to 512 MiB); a process done with passes for a while hands them back.
void ReleasePassBuffers();

// A batch's residual stream between layers, from which a pass stopped there resumes. The pass is
// the same computation however it is cut: nothing but this stream is carried between layers.
struct ResidualStream {
  int layer = 0;                      // the next layer to run; the model's layers once all have run
  std::vector<int64_t> offsets;       // first row of each sequence; offsets.back() = total
  internal::HugePageVector<float> x;  // [total tokens, hidden]; matmuls add into it
};

// The batch's token embeddings: the stream before layer 0. INVALID_ARGUMENT for an empty
// sequence, a token outside the vocabulary or branches that leave a tree no prefix. The batch's
// edits are not read.
absl::StatusOr<ResidualStream> EmbedBatch(const Model& model,
                                          absl::Span<const SequenceInput> batch);

// Runs layers [stream->layer, end_layer) over the stream with the batch's edits, the tap and the
// cancellation of `options`. The batch holds the sequences the stream was embedded from (their
// edits may be others than the layers before saw). INVALID_ARGUMENT for an invalid edit, a batch
// that is not the stream's or an end_layer outside [stream->layer, layers].
absl::Status RunLayers(const Model& model, absl::Span<const SequenceInput> batch, int end_layer,
                       const ForwardOptions& options, ResidualStream* stream);

// The final norm of a stream that has run every layer (FAILED_PRECONDITION otherwise).
absl::StatusOr<ForwardOutput> FinishForward(const Model& model, const ResidualStream& stream);

// The lowest layer any sequence's edits touch; the model's layers when none has edits.
int FirstEditedLayer(const Model& model, absl::Span<const SequenceInput> batch);

// The unedited model's pass over one batch, run only as far as it is asked, each layer once: the
// prefix that passes with edits from a later layer on share (each continues from a copy of the
// stream, so differently edited settings of one batch run the layers below their edits once),
// and what an edit hook observes of the intact model (ablate.h's restored super activation).
// Holds one stream of the batch (tokens x hidden floats) besides the copies it hands out; lives
// for one batch. The batch's tokens must outlive it.
class IntactPass {
 public:
  // The batch's edits are ignored; precision and cancellation from `options`, never its tap.
  IntactPass(const Model& model, absl::Span<const SequenceInput> batch,
             const ForwardOptions& options);

  // A copy of the intact stream before `layer` (0 .. layers). A layer below one already passed
  // is run again from the embeddings, into the copy alone.
  absl::StatusOr<ResidualStream> Before(int layer);
  // Runs `layer` of the intact model with `tap` watching it, on a copy of the stream before it.
  absl::Status Watch(int layer, ForwardTap* tap);
  // `edited`'s pass (the same sequences, with edits): the intact stream before the first layer
  // they touch, then the rest with them. Bit for bit RunForward(edited) without a tap.
  absl::StatusOr<ForwardOutput> RunEdited(absl::Span<const SequenceInput> edited);

 private:
  const Model& model_;
  std::vector<SequenceInput> batch_;  // without edits
  ForwardOptions options_;
  std::optional<ResidualStream> stream_;
};

// A rope's inverse frequencies (rotary_dim / 2), as transformers computes them in float32: Llama 3
// scaling, linear scaling and per-dimension factors applied.
std::vector<float> InverseFrequencies(const RopeConfig& rope);

// logits[rows, vocab] = hidden[rows, hidden] * lm_head^T, soft-capped where the model says.

absl::Status ComputeLogits(const Model& model, const float* hidden, int64_t rows, float* logits,
                           Precision precision);

// logits[i] = cap * tanh(logits[i] / cap) with the model's final soft-capping (Gemma 2); a no-op
// for models without one. Whoever takes logits from the lm_head applies it.
void SoftcapLogits(const ModelConfig& config, float* logits, int64_t n);

}  // namespace superweight
