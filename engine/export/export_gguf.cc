#include "engine/export/export_gguf.h"

#include <sys/stat.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/formats/gguf.h"
#include "engine/formats/gguf_requantize.h"
#include "engine/formats/gguf_writer.h"
#include "engine/formats/quantize_ggml.h"
#include "engine/model/tensor_names.h"
#include "engine/util/mapped_file.h"

namespace superweight {
absl::StatusOr<GgufExportSummary> ExportGguf(const Model& source, const Model& view,
                                             const GgufExportOptions& options,
                                             const std::string& out_path) {
  if (source.format != ModelFormat::kGguf) {
    return absl::UnimplementedError(
        "GGUF export needs a GGUF source (its metadata and tokenizer are carried over)");
  }
  for (DType type : {options.type, options.super_weight_tensor_type}) {
    if (options.llama_file_type.has_value() && type == options.type) continue;
    if (!HasGgmlQuantizer(type)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("no reference quantizer for %s (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, "
                          "Q5_K, Q6_K, F16, BF16, F32)",
                          DTypeName(type)));
    }
  }
  if (absl::Status s = CheckSuperWeights(source, options.super_weights); !s.ok()) return s;
  // The source's own mapping, not the path opened again: the path may name a newer file by now.
  const MappedFile* mapped = nullptr;
  for (const auto& file : source.files) {
    if (file->path() == source.path) mapped = file.get();
  }
  if (mapped == nullptr) {
    return absl::InternalError(
        absl::StrFormat("%s: the model does not hold its file", source.path));
  }
  auto gguf = ParseGguf(mapped->bytes(), source.path);
  if (!gguf.ok()) return gguf.status();
  // The linear weight a tensor is (its layer and kind), and whether it holds a super weight or
  // belongs to a super expert's layer.
  struct Linear {
    int layer;
    LinearKind kind;
    bool stacked;
    bool holds_super_weight;
  };
  auto linear_of = [&](const std::string& name) -> absl::StatusOr<std::optional<Linear>> {
    auto named = FindTensorNaming(source.config.arch, ModelFormat::kGguf, name);
    if (!named.has_value()) return std::nullopt;
    if (named->naming->role == TensorRole::kAttnQkv ||
        named->naming->role == TensorRole::kFfnGateUp) {
      return absl::UnimplementedError("GGUF export of fused projections (Phi-3) is not built");
    }
    if (named->layer < 0) return std::nullopt;
    std::optional<LinearKind> kind = LinearKindOfRole(named->naming->role);
    if (!kind.has_value()) kind = ExpertKindOfRole(named->naming->role);
    if (!kind.has_value()) return std::nullopt;
    Linear l{named->layer, *kind, named->naming->per_expert, false};
    for (const SuperWeightCoordinate& sw : options.super_weights) {
      l.holds_super_weight |=
          l.kind == LinearKind::kDown && sw.layer == l.layer && (sw.expert >= 0) == l.stacked;
    }
    for (const ExpertId& e : options.super_experts) {
      l.holds_super_weight |= l.stacked && e.layer == l.layer;
    }
    return l;
  };
  std::optional<LlamaQuantizePlan> plan;
  if (options.llama_file_type.has_value()) {
    LlamaQuantizeOptions llama;
    llama.file_type = *options.llama_file_type;
    for (const std::string& name : gguf->tensor_order) {
      auto linear = linear_of(name);
      if (!linear.ok()) return linear.status();
      if (!linear->has_value() || !(*linear)->holds_super_weight) continue;
      // As a --tensor-type override naming exactly this tensor.
      std::string pattern = "^";
      for (char c : name) {
        if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') pattern += '\\';
        pattern += c;
      }
      llama.overrides.push_back({pattern + "$", options.super_weight_tensor_type});
    }
    auto planned = PlanLlamaQuantize(*gguf, llama);
    if (!planned.ok()) return planned.status();
    plan = std::move(*planned);
  }
  auto file_type =
      plan.has_value() ? absl::StatusOr<uint32_t>(plan->file_type) : LlamaFileType(options.type);
  if (!file_type.ok()) return file_type.status();

  GgufFileWriter writer;
  writer.CopyMetadataFrom(*gguf);
  writer.SetUint32("general.file_type", *file_type);
  if (!options.setting.empty()) writer.SetString("superweight.setting", options.setting);
  GgufExportSummary summary;
  for (const std::string& name : gguf->tensor_order) {
    const GgufTensor& t = gguf->tensors.at(name);
    auto linear = linear_of(name);
    if (!linear.ok()) return linear.status();
    const PlannedTensor* planned = plan.has_value() ? plan->Find(name) : nullptr;
    if (!linear->has_value()) {
      absl::Status added;
      if (planned != nullptr && planned->to != planned->from) {
        added = writer.AddTensor(name, t.ne, planned->to,
                                 RequantizedRows(t, planned->to, options.cancelled));
        ++summary.other_converted;
      } else {
        added = writer.AddTensor(name, t.ne, t.dtype, absl::MakeConstSpan(t.data, t.nbytes));
      }
      if (!added.ok()) return added;
      continue;
    }
    const Linear& l = **linear;
    // A GGUF stacks a layer's experts in one tensor: the matrices it holds, in its order.
    std::vector<const Matrix*> parts;
    for (int e = l.stacked ? 0 : -1; e < (l.stacked ? view.config.experts : 0); ++e) {
      parts.push_back(view.layers[l.layer].Find(l.kind, e));
      if (parts.back() == nullptr) {
        return absl::InternalError(absl::StrFormat("%s: the view has no such matrix", name));
      }
    }
    const Matrix& w = *parts.front();
    DType type;
    if (planned != nullptr) {
      type = planned->to;
      if (planned->fallback) ++summary.fallback;
    } else {
      const DType requested =
          l.holds_super_weight ? options.super_weight_tensor_type : options.type;
      // As llama-quantize: a K type's 256-value blocks may not fit the rows (SmolLM2's 576).
      type = FallbackTypeForRows(requested, w.cols);
      if (type != requested) ++summary.fallback;
    }
    if (w.cols % Traits(type).block_elements != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: rows of %d are not whole %s blocks", name, w.cols, DTypeName(type)));
    }
    auto row_bytes = StorageBytes(type, static_cast<uint64_t>(w.cols));
    if (!row_bytes.ok()) return row_bytes.status();
    // The view's rows are the file's rows (q/k keep llama.cpp's order in both).
    auto produce = [parts, type, row_bytes = *row_bytes, name, cancelled = options.cancelled](
                       const GgufFileWriter::ByteSink& sink) -> absl::Status {
      std::vector<float> values(parts.front()->cols);
      std::vector<uint8_t> quantized(row_bytes);
      for (const Matrix* part : parts) {
        for (int64_t r = 0; r < part->rows; ++r) {
          if (cancelled != nullptr && cancelled->load(std::memory_order_relaxed)) {
            return absl::CancelledError("cancelled");
          }
          part->RowToFloat(r, values.data());
          absl::Status s = QuantizeRow(type, values.data(), part->cols, quantized.data());
          if (!s.ok()) {
            return absl::Status(s.code(), absl::StrFormat("%s row %d: %s", name, r, s.message()));
          }
          if (s = sink(quantized); !s.ok()) return s;
        }
      }
      return absl::OkStatus();
    };
    if (absl::Status s =
            writer.AddTensor(name, t.ne, type, GgufFileWriter::TensorProducer(produce));
        !s.ok()) {
      return s;
    }
    // A mix of a float type takes no override (as llama-quantize): then nothing is raised.
    const bool raised = l.holds_super_weight && (planned == nullptr || planned->overridden);
    ++(raised ? summary.super_weight_tensors : summary.converted);
  }
  if (absl::Status s =
          writer.WriteAtomically(out_path, [&source] { return source.CheckFilesUnchanged(); });
      !s.ok()) {
    return s;
  }
  struct stat st;
  if (::stat(out_path.c_str(), &st) == 0) summary.bytes = static_cast<uint64_t>(st.st_size);
  return summary;
}

}  // namespace superweight
