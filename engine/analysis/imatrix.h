// An importance matrix as llama.cpp's llama-imatrix computes it: for every linear weight of the
// layers, the sum over a calibration text's tokens of each input column's squared activation,
// and the tokens counted; written in llama.cpp's GGUF imatrix format, which llama-quantize's
// --imatrix reads. A super weight's input column can be boosted, so that a quantizer weighing
// columns by importance fits the super weight's block to it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/analysis/ablate.h"  // SuperWeightCoordinate
#include "engine/model/model.h"
#include "engine/runtime/matmul.h"  // Precision

namespace superweight {

struct ImatrixOptions {
  int chunk = 512;       // tokens per chunk (llama-imatrix's -c); each chunk is its own sequence
  int max_chunks = 0;    // 0: every full chunk of the text (llama-imatrix's --chunks)
  int batch_chunks = 4;  // chunks per forward pass
  // Each chunk's first token becomes this one (llama-imatrix does so with BOS where the
  // vocabulary adds it); -1: the text's own.
  int32_t first_token = -1;
  Precision precision = Precision::kF32;
  std::string dataset;  // recorded in the file (imatrix.datasets)
  const std::atomic<bool>* cancelled = nullptr;
  std::function<void(double)> on_progress;  // fraction of chunks done
};

struct ImatrixEntry {
  std::string name;            // the weight's GGUF name, "blk.11.ffn_down.weight"
  std::vector<float> in_sum2;  // per input column, the sum of its squared activations
  int64_t count = 0;           // tokens seen
};

struct Imatrix {
  std::vector<ImatrixEntry> entries;  // by name, as llama-imatrix writes them
  int chunks = 0;
  int chunk_size = 0;
  std::vector<std::string> datasets;
  ImatrixEntry* Find(const std::string& name);
  const ImatrixEntry* Find(const std::string& name) const;
};

// The importance matrix of `tokens` cut into options.chunk-token chunks, its entries named as in
// GGUF files whatever file the model was opened from. INVALID_ARGUMENT when the text has no full
// chunk, UNIMPLEMENTED for mixture-of-experts models (their routed inputs are not observed per
// expert here) and for an architecture whose table has no GGUF names.
absl::StatusOr<Imatrix> ComputeImatrix(const Model& model, absl::Span<const int32_t> tokens,
                                       const ImatrixOptions& options);

// Multiplies the importance of each super weight's input column (its down_proj's column) by
// `factor` (> 0), each column once. INVALID_ARGUMENT for a coordinate the matrix has no entry or
// column for, or a product a float cannot hold.
absl::Status BoostSuperWeightColumns(const Model& model,
                                     absl::Span<const SuperWeightCoordinate> super_weights,
                                     double factor, Imatrix* imatrix);

// llama.cpp's GGUF imatrix file: general.type "imatrix", imatrix.datasets, imatrix.chunk_count,
// imatrix.chunk_size; per weight NAME.in_sum2 (F32 [cols, 1]) and NAME.counts (F32 [1, 1]).
// Written atomically, never over an existing file.
absl::Status WriteImatrixGguf(const Imatrix& imatrix, const std::string& path);

}  // namespace superweight
