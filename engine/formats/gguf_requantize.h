// Re-quantization of a GGUF file's weight matrices to another GGML type, as llama.cpp's
// llama-quantize does for the simple block types: every other tensor and every metadata entry
// copied unchanged, general.file_type set to the new type.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/formats/dtype.h"
#include "engine/formats/gguf.h"
#include "engine/formats/gguf_writer.h"
#include "engine/formats/llama_quantize_plan.h"

namespace superweight {

// The tensors a requantization converts by default: the 2-D weights of the transformer blocks
// ("blk.N.*.weight"); embeddings, the output head and the norms are copied.
bool IsBlockWeightMatrix(const GgufTensor& tensor);

// llama_ftype's value for a file mostly of `type` (LLAMA_FTYPE_MOSTLY_Q8_0 = 7, ...), the value
// of general.file_type.
absl::StatusOr<uint32_t> LlamaFileType(DType type);

// A tensor's rows in another type for GgufFileWriter: each dequantized (DequantizeRow) and
// quantized again (QuantizeRow), a chunk of 256 rows at a time on every core, so memory stays at
// one chunk whatever the model's size. t.data must outlive the producer (it points into the
// source's mapping). CANCELLED once *cancelled is set (checked per chunk; null: never).
GgufFileWriter::TensorProducer RequantizedRows(const GgufTensor& t, DType type,
                                               const std::atomic<bool>* cancelled = nullptr);

struct RequantizeOptions {
  DType target = DType::kQ8_0;
  // Which tensors to convert (IsBlockWeightMatrix when empty).
  std::function<bool(const GgufTensor&)> select;
  // Set: every tensor in the type llama-quantize would write it in for these options
  // (PlanLlamaQuantize), and general.file_type the plan's; target and select are not used.
  std::optional<LlamaQuantizeOptions> llama;
  const std::atomic<bool>* cancelled = nullptr;  // CANCELLED once set (checked per chunk)
};

struct RequantizeSummary {
  std::vector<std::string> converted;
  // Of those, the ones written in llama.cpp's fallback type (FallbackTypeForRows): their rows
  // are not whole blocks of the K-quant target.
  std::vector<std::string> fallback;
  std::vector<std::string> copied;
  // Selected, but their rows are not whole blocks of the target type (nor of a fallback):
  // copied unchanged.
  std::vector<std::string> not_whole_blocks;
};

// Reads source_path and writes out_path (atomically, GgufFileWriter), each selected tensor
// through RequantizedRows, so memory stays at one chunk of rows whatever the model's size.
// INVALID_ARGUMENT for a source value that is not finite (naming the tensor and row), UNIMPLEMENTED
// for a target without HasGgmlQuantizer.
absl::StatusOr<RequantizeSummary> RequantizeGguf(const std::string& source_path,
                                                 const std::string& out_path,
                                                 const RequantizeOptions& options);

}  // namespace superweight
