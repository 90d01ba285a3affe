#include "engine/analysis/quantize_recipe.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/formats/dequantize.h"
#include "engine/formats/gguf.h"
#include "engine/formats/quantize_ggml.h"
#include "engine/model/tensor_names.h"
#include "engine/util/mapped_file.h"

namespace superweight {
namespace {

// The types an override may name for a tensor that holds a super weight, smallest first.
constexpr DType kCandidates[] = {DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                                 DType::kQ6_K, DType::kQ8_0, DType::kF16};

double BitsPerWeight(DType type) {
  const DTypeTraits& t = Traits(type);
  return 8.0 * t.block_bytes / t.block_elements;
}

DType Written(DType requested, int64_t cols) {
  const DType fitted = FallbackTypeForRows(requested, cols);
  return cols % Traits(fitted).block_elements == 0 ? fitted : DType::kF16;
}

// Quantizes every row of `w` in `written` and back: the tensor's relative error, and each named
// element's.
absl::Status Measure(const Matrix& w, DType written,
                     const std::vector<SuperWeightCoordinate>& super_weights,
                     const std::atomic<bool>* cancelled, TypeCandidate* candidate) {
  // llama-quantize copies a tensor already in the type it chose: nothing changes.
  if (written == w.dtype) return absl::OkStatus();
  auto row_bytes = StorageBytes(written, static_cast<uint64_t>(w.cols));
  if (!row_bytes.ok()) return row_bytes.status();
  std::vector<float> row(w.cols), back(w.cols);
  std::vector<uint8_t> quantized(*row_bytes);
  double error2 = 0, value2 = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    if (cancelled != nullptr && cancelled->load(std::memory_order_relaxed)) {
      return absl::CancelledError("cancelled");
    }
    w.RowToFloat(r, row.data());
    if (absl::Status s = QuantizeRow(written, row.data(), w.cols, quantized.data()); !s.ok()) {
      return s;
    }
    DequantizeRow(written, quantized.data(), w.cols, back.data());
    for (int64_t j = 0; j < w.cols; ++j) {
      const double d = double{back[j]} - row[j];
      error2 += d * d;
      value2 += double{row[j]} * row[j];
    }
    for (const SuperWeightCoordinate& sw : super_weights) {
      if (sw.row != r) continue;
      const double stored = row[sw.col];
      const double error = stored == 0 ? 0 : std::fabs(back[sw.col] - stored) / std::fabs(stored);
      candidate->super_weight_relative_error =
          std::max(candidate->super_weight_relative_error, error);
    }
  }
  candidate->tensor_relative_error = value2 > 0 ? std::sqrt(error2 / value2) : 0;
  return absl::OkStatus();
}

// A regular expression that matches exactly `name` (llama-quantize searches its patterns).
std::string ExactPattern(const std::string& name) {
  std::string pattern = "^";
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') pattern += '\\';
    pattern += c;
  }
  return pattern + "$";
}

std::string ShellQuoted(const std::string& arg) {
  const bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("_-./=:+,@%").find(c) != std::string_view::npos;
  });
  if (plain) return arg;
  std::string quoted = "'";
  for (char c : arg) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

}  // namespace

absl::StatusOr<QuantizeRecipe> PlanQuantizeRecipe(const Model& model,
                                                  const RecipeOptions& options) {
  if (model.format != ModelFormat::kGguf) {
    return absl::UnimplementedError(
        "a recipe is for llama-quantize, which reads GGUF files: this model is not one");
  }
  if (!(options.max_super_weight_error > 0)) {
    return absl::InvalidArgumentError("max_super_weight_error must be positive");
  }
  if (!IsQuantized(options.file_type.default_type)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not quantized: llama-quantize applies no --tensor-type override to it",
        options.file_type.name));
  }
  const MappedFile* mapped = nullptr;
  for (const auto& file : model.files) {
    if (file->path() == model.path) mapped = file.get();
  }
  if (mapped == nullptr) {
    return absl::InternalError(absl::StrFormat("%s: the model does not hold its file", model.path));
  }
  auto gguf = ParseGguf(mapped->bytes(), model.path);
  if (!gguf.ok()) return gguf.status();
  const TensorNaming* down = FindRole(model.config.arch, TensorRole::kFfnDown);
  if (down == nullptr) return absl::UnimplementedError("the architecture has no down_proj");

  QuantizeRecipe recipe;
  recipe.file_type = options.file_type;
  for (const auto& [name, t] : gguf->tensors) recipe.source_quantized |= IsQuantized(t.dtype);
  // The tensors that hold super weights, each once, in layer order.
  std::map<int, std::vector<SuperWeightCoordinate>> by_layer;
  for (const SuperWeightCoordinate& sw : options.super_weights) {
    if (sw.expert >= 0) {
      return absl::UnimplementedError(
          absl::StrFormat("%s: recipes for routed experts' tensors are not built", sw.Name()));
    }
    const Matrix* w = DownProjOf(model, sw);
    if (w == nullptr || sw.row < 0 || sw.row >= w->rows || sw.col < 0 || sw.col >= w->cols) {
      return absl::InvalidArgumentError(absl::StrFormat("%s is outside the model", sw.Name()));
    }
    by_layer[sw.layer].push_back(sw);
  }
  for (const auto& [layer, held] : by_layer) {
    RecipeTensor t;
    t.name = TensorName(*down, ModelFormat::kGguf, layer);
    t.super_weights = held;
    // The mix as llama-quantize will see it: with the overrides chosen so far.
    LlamaQuantizeOptions so_far;
    so_far.file_type = options.file_type;
    so_far.overrides = recipe.overrides;
    auto plan = PlanLlamaQuantize(*gguf, so_far);
    if (!plan.ok()) return plan.status();
    const PlannedTensor* planned = plan->Find(t.name);
    if (planned == nullptr) {
      return absl::InternalError(absl::StrFormat("%s: not in the file's plan", t.name));
    }
    t.mix_type = planned->to;
    const Matrix& w = *DownProjOf(model, held.front());
    std::vector<DType> requested(std::begin(kCandidates), std::end(kCandidates));
    requested.push_back(t.mix_type);
    for (DType type : requested) {
      const DType written = Written(type, w.cols);
      if (std::any_of(t.candidates.begin(), t.candidates.end(),
                      [written](const TypeCandidate& c) { return c.written == written; })) {
        continue;
      }
      TypeCandidate c{type, written, BitsPerWeight(written)};
      if (absl::Status s = Measure(w, written, held, options.cancelled, &c); !s.ok()) return s;
      t.candidates.push_back(c);
    }
    std::stable_sort(t.candidates.begin(), t.candidates.end(),
                     [](const TypeCandidate& a, const TypeCandidate& b) {
                       return a.bits_per_weight < b.bits_per_weight;
                     });
    const TypeCandidate& mix =
        *std::find_if(t.candidates.begin(), t.candidates.end(),
                      [&t](const TypeCandidate& c) { return c.written == t.mix_type; });
    t.chosen = t.mix_type;
    if (mix.super_weight_relative_error > options.max_super_weight_error) {
      // The smallest type above the mix's that keeps the super weight and the tensor no worse;
      // F16 (the last) keeps any super weight an f16 can hold.
      for (const TypeCandidate& c : t.candidates) {
        if (c.bits_per_weight < mix.bits_per_weight) continue;
        const bool keeps = c.super_weight_relative_error <= options.max_super_weight_error &&
                           c.tensor_relative_error <= mix.tensor_relative_error;
        if (keeps || c.written == DType::kF16) {
          t.chosen = c.written;
          t.overridden = true;
          recipe.overrides.push_back({ExactPattern(t.name), c.requested});
          break;
        }
      }
    }
    recipe.tensors.push_back(std::move(t));
  }
  return recipe;
}

std::string LlamaQuantizeCommand(const QuantizeRecipe& recipe, const std::string& model_path,
                                 const std::string& out_path, const std::string& imatrix_path) {
  std::vector<std::string> args = {"llama-quantize"};
  if (recipe.source_quantized) args.push_back("--allow-requantize");
  if (!imatrix_path.empty()) {
    args.push_back("--imatrix");
    args.push_back(ShellQuoted(imatrix_path));
  }
  for (const TensorTypeOverride& o : recipe.overrides) {
    args.push_back("--tensor-type");
    args.push_back(ShellQuoted(absl::StrCat(o.pattern, "=", DTypeName(o.type))));
  }
  args.push_back(ShellQuoted(model_path));
  args.push_back(ShellQuoted(out_path));
  args.push_back(recipe.file_type.name);
  return absl::StrJoin(args, " ");
}

}  // namespace superweight
