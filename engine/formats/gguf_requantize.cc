#include "engine/formats/gguf_requantize.h"

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/formats/gguf_writer.h"
#include "engine/formats/quantize_ggml.h"
#include "engine/util/mapped_file.h"

namespace superweight {

bool IsBlockWeightMatrix(const GgufTensor& tensor) {
  return tensor.ne.size() == 2 && absl::StrContains(tensor.name, "blk.") &&
         absl::EndsWith(tensor.name, ".weight");
}

absl::StatusOr<uint32_t> LlamaFileType(DType type) {
  const int32_t ftype = Traits(type).llama_ftype;
  if (ftype == kNoLlamaFileType) {
    return absl::UnimplementedError(
        absl::StrFormat("no llama_ftype stands for a file of %s", DTypeName(type)));
  }
  return static_cast<uint32_t>(ftype);
}

GgufFileWriter::TensorProducer RequantizedRows(const GgufTensor& t, DType type,
                                               const std::atomic<bool>* cancelled) {
  return [&t, type, cancelled](const GgufFileWriter::ByteSink& sink) -> absl::Status {
    const int64_t cols = t.ne[0];
    int64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
    auto src_row = StorageBytes(t.dtype, static_cast<uint64_t>(cols));
    auto dst_row = StorageBytes(type, static_cast<uint64_t>(cols));
    if (!src_row.ok()) return src_row.status();
    if (!dst_row.ok()) return dst_row.status();
    // A chunk of rows at a time, its rows quantized on every core and handed to the sink in
    // order: the same bytes as one row after another, at the machine's speed, and never more of
    // the tensor in memory than a chunk.
    const int64_t chunk_rows = std::min<int64_t>(rows, 256);
    std::vector<uint8_t> chunk(static_cast<size_t>(chunk_rows) * *dst_row);
    std::vector<absl::Status> row_status(static_cast<size_t>(chunk_rows));
    for (int64_t first = 0; first < rows; first += chunk_rows) {
      if (cancelled != nullptr && cancelled->load(std::memory_order_relaxed)) {
        return absl::CancelledError("cancelled");
      }
      const int64_t n = std::min(chunk_rows, rows - first);
#pragma omp parallel
      {
        std::vector<float> values(static_cast<size_t>(cols));
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; ++i) {
          DequantizeRow(t.dtype, t.data + (first + i) * *src_row, cols, values.data());
          row_status[i] = QuantizeRow(type, values.data(), cols, chunk.data() + i * *dst_row);
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        if (const absl::Status& s = row_status[i]; !s.ok()) {
          return absl::Status(s.code(),
                              absl::StrFormat("%s row %d: %s", t.name, first + i, s.message()));
        }
      }
      if (absl::Status s = sink(absl::MakeConstSpan(chunk.data(), n * *dst_row)); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  };
}

absl::StatusOr<RequantizeSummary> RequantizeGguf(const std::string& source_path,
                                                 const std::string& out_path,
                                                 const RequantizeOptions& options) {
  const DType target = options.target;
  if (!options.llama.has_value() && !HasGgmlQuantizer(target)) {
    return absl::UnimplementedError(
        absl::StrFormat("cannot quantize to %s (no reference quantizer)", DTypeName(target)));
  }
  auto mapped = MappedFile::Open(source_path);
  if (!mapped.ok()) return mapped.status();
  auto source = ParseGguf((*mapped)->bytes(), source_path);
  if (!source.ok()) return source.status();
  std::optional<LlamaQuantizePlan> plan;
  if (options.llama.has_value()) {
    auto planned = PlanLlamaQuantize(*source, *options.llama);
    if (!planned.ok()) return planned.status();
    plan = std::move(*planned);
  }
  auto file_type =
      plan.has_value() ? absl::StatusOr<uint32_t>(plan->file_type) : LlamaFileType(target);
  if (!file_type.ok()) return file_type.status();

  GgufFileWriter writer;
  writer.CopyMetadataFrom(*source);
  writer.SetUint32("general.file_type", *file_type);
  RequantizeSummary summary;
  for (const std::string& name : source->tensor_order) {
    const GgufTensor& t = source->tensors.at(name);
    const PlannedTensor* planned = plan.has_value() ? plan->Find(name) : nullptr;
    const bool selected = planned != nullptr ? planned->to != planned->from
                          : options.select   ? options.select(t)
                                             : IsBlockWeightMatrix(t);
    const int64_t cols = t.ne[0];
    const DType type = planned != nullptr ? planned->to : FallbackTypeForRows(target, cols);
    absl::Status added;
    if (selected && cols % Traits(type).block_elements == 0) {
      added = writer.AddTensor(name, t.ne, type, RequantizedRows(t, type, options.cancelled));
      summary.converted.push_back(name);
      if (planned != nullptr ? planned->fallback : type != target) {
        summary.fallback.push_back(name);
      }
    } else {
      added = writer.AddTensor(name, t.ne, t.dtype, absl::MakeConstSpan(t.data, t.nbytes));
      (selected ? summary.not_whole_blocks : summary.copied).push_back(name);
    }
    if (!added.ok()) return added;
  }
  if (auto s = writer.WriteAtomically(out_path, [&] { return (*mapped)->CheckUnchanged(); });
      !s.ok()) {
    return s;
  }
  return summary;
}

}  // namespace superweight
