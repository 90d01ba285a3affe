// A quantized model as a GGUF file llama.cpp runs: the source GGUF's metadata, tokenizer and
// other tensors carried over byte for byte, every linear weight of the layers in a GGML block
// type from llama.cpp's reference quantizers (formats/quantize_ggml.h), given the values of a
// model view (the stored weights, or with outliers clipped and super weights kept:
// ClipLinearWeights), and the tensors holding super weights at a higher type.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/ablate.h"  // SuperWeightCoordinate
#include "engine/formats/dtype.h"
#include "engine/formats/llama_quantize_plan.h"
#include "engine/model/model.h"

namespace superweight {

struct GgufExportOptions {
  // Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16 or F32. A tensor whose rows are not
  // whole blocks of a K type takes llama.cpp's fallback type (FallbackTypeForRows).
  DType type = DType::kQ4_1;
  // Set instead of `type`: every tensor in the type llama-quantize would write it in for this
  // file type (llama_quantize_plan.h; the embedding and output head included, quantized from the
  // source's values), the tensors holding super weights or super experts overridden to
  // super_weight_tensor_type as its --tensor-type would.
  std::optional<LlamaFtype> llama_file_type;
  // The type of each layer's down_proj that holds one of `super_weights` (F16 or Q8_0, or the
  // same as `type`); empty super_weights: none.
  DType super_weight_tensor_type = DType::kF16;
  std::vector<SuperWeightCoordinate> super_weights;
  // Super experts held too: a GGUF stacks a layer's experts, so each one's layer's stacked gate,
  // up and down tensors are written in super_weight_tensor_type.
  std::vector<ExpertId> super_experts;
  // Recorded in the file as superweight.setting.
  std::string setting;
  // CANCELLED once set (checked every row written); null: never.
  const std::atomic<bool>* cancelled = nullptr;
};

struct GgufExportSummary {
  int64_t converted = 0;  // linear weights written in `type` (or the mix's choice for them)
  int64_t super_weight_tensors = 0;  // written in super_weight_tensor_type
  int64_t fallback = 0;  // of those two counts, written in FallbackTypeForRows's type instead
  uint64_t bytes = 0;    // the file's size
  // With llama_file_type: the other tensors the mix quantizes (token_embd, output).
  int64_t other_converted = 0;
};

// `view` is a view of `source` (Model::ShareWeights, possibly with transforms); source must
// have been opened from a GGUF file. Written atomically (a temporary beside out_path, renamed).
// INVALID_ARGUMENT for a type without a reference quantizer or rows that are not whole blocks of
// it (nor of its fallback), UNIMPLEMENTED for sources that are not GGUF or hold fused projections.
absl::StatusOr<GgufExportSummary> ExportGguf(const Model& source, const Model& view,
                                             const GgufExportOptions& options,
                                             const std::string& out_path);

}  // namespace superweight
