// Asymmetric min-max round-to-nearest INTn fake quantization, the paper's: per block of
// consecutive elements of the row-major tensor, step = (max - min) / (2^n - 1), code =
// round((w - min) / step), value = min + code * step; optionally after clipping outliers, and
// with chosen elements (the super weights) kept at their stored values. A tensor's quantization
// is a WeightTransform: the engine applies it where it converts weight rows for its matmuls, so
// no quantized copy of the model is ever built.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace superweight {

enum class ClipMethod {
  kNone,
  kZScore,     // clamp to +-(mean|w| + z std|w|) per block (std with n - 1)
  kBlockTop,   // clamp to +-(the (1 - fraction) quantile of |w| in the block)
  kTensorTop,  // the same quantile over the whole tensor
};
const char* ClipMethodName(ClipMethod method);  // "none", "z", "block_top", "tensor_top"
absl::StatusOr<ClipMethod> ParseClipMethod(const std::string& name);

constexpr int64_t kBlockTensor = 0;  // the whole tensor one block
constexpr int64_t kBlockRow = -1;    // each row a block

struct RtnSpec {
  int bits = 4;
  // Elements per block (the tensor's last block may be shorter; a block larger than the tensor
  // is the whole tensor), or kBlockTensor, or kBlockRow.
  int64_t block_size = kBlockTensor;
  ClipMethod clip = ClipMethod::kNone;
  double clip_value = 0;  // z for kZScore, the top fraction otherwise
  // INVALID_ARGUMENT naming what is out of range: bits outside 2..8, a block size below 2, a
  // clip value that is not finite and positive (a fraction must also be below 1).
  absl::Status Validate() const;
  std::string Name() const;  // "INT4 b65536 z=9"
};

// The clip value a method uses when a request gives none: the paper's z = 9, 1e-5 of a block,
// 1e-6 of a tensor.
double DefaultClipValue(ClipMethod method);

// An element kept at its stored value, in the tensor's [row, col] coordinates.
struct KeptElement {
  int64_t row = 0;
  int64_t col = 0;
};

// One tensor's fake quantization, its per-block bounds computed once from the stored values.
class RtnTensor : public WeightTransform {
 public:
  // INVALID_ARGUMENT for a bad spec, a kept element outside the tensor, or a stored value that
  // is not finite.
  static absl::StatusOr<std::unique_ptr<RtnTensor>> Make(const Matrix& w, const RtnSpec& spec,
                                                         const std::vector<KeptElement>& keep);
  // The spec's clipping alone, no rounding (kept elements still restored): what a GGML
  // quantizer is given when an export clips outliers first.
  static absl::StatusOr<std::unique_ptr<RtnTensor>> MakeClipOnly(
      const Matrix& w, const RtnSpec& spec, const std::vector<KeptElement>& keep);

  void Apply(int64_t first_row, int64_t rows, int64_t cols, float* values) const override;

  int64_t blocks() const { return static_cast<int64_t>(min_.size()); }
  // Over every element: the sum of (quantized - stored)^2, kept elements included (error 0).
  double squared_error() const { return squared_error_; }
  int64_t elements() const { return rows_ * cols_; }

 private:
  RtnTensor() = default;
  // Bounds from the stored values, then the error of Apply (rounding, or clipping alone).
  static absl::StatusOr<std::unique_ptr<RtnTensor>> Build(const Matrix& w, const RtnSpec& spec,
                                                          const std::vector<KeptElement>& keep,
                                                          bool round);
  int64_t rows_ = 0, cols_ = 0, block_elements_ = 0;
  int levels_ = 15;
  bool round_ = true;
  std::vector<float> clip_, min_, step_;         // per block; clip_ +inf where none
  std::vector<std::pair<int64_t, float>> kept_;  // flat index -> stored value, sorted
  double squared_error_ = 0;
};

// The quantized value of w under one block's bounds (what Apply computes per element).
float RtnQuantizeValue(float w, float clip, float min, float step, int levels);

}  // namespace superweight
