#include "engine/quant/rtn.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"

namespace superweight {
namespace {

// numpy's default ("linear") quantile of values (which it reorders), in double as numpy
// computes it.
double LinearQuantile(std::vector<float>& values, double q) {
  const double position = q * static_cast<double>(values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(position));
  const double t = position - static_cast<double>(below);
  std::nth_element(values.begin(), values.begin() + below, values.end());
  const double a = values[below];
  if (below + 1 >= values.size()) return a;
  const double b = *std::min_element(values.begin() + below + 1, values.end());
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

double MeanPlusZStd(const float* values, int64_t n, double z) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::fabs(values[i]);
  const double mean = sum / static_cast<double>(n);
  double squares = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(values[i]) - mean;
    squares += d * d;
  }
  const double std_dev = n > 1 ? std::sqrt(squares / static_cast<double>(n - 1)) : 0.0;
  return mean + z * std_dev;
}

}  // namespace

const char* ClipMethodName(ClipMethod method) {
  switch (method) {
    case ClipMethod::kNone:
      return "none";
    case ClipMethod::kZScore:
      return "z";
    case ClipMethod::kBlockTop:
      return "block_top";
    case ClipMethod::kTensorTop:
      return "tensor_top";
  }
  return "?";
}

absl::StatusOr<ClipMethod> ParseClipMethod(const std::string& name) {
  for (ClipMethod m :
       {ClipMethod::kNone, ClipMethod::kZScore, ClipMethod::kBlockTop, ClipMethod::kTensorTop}) {
    if (name == ClipMethodName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown clip method '%s' (none, z, block_top, tensor_top)", name));
}

double DefaultClipValue(ClipMethod method) {
  switch (method) {
    case ClipMethod::kZScore:
      return 9;
    case ClipMethod::kBlockTop:
      return 1e-5;
    case ClipMethod::kTensorTop:
      return 1e-6;
    case ClipMethod::kNone:
      break;
  }
  return 0;
}

absl::Status RtnSpec::Validate() const {
  if (bits < 2 || bits > 8) {
    return absl::InvalidArgumentError(absl::StrFormat("bits %d outside 2..8", bits));
  }
  if (block_size != kBlockTensor && block_size != kBlockRow && block_size < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "block size %d: at least 2 elements (or the whole tensor, or a row)", block_size));
  }
  if (clip != ClipMethod::kNone) {
    if (!std::isfinite(clip_value) || clip_value <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "clip value %g for %s must be finite and positive", clip_value, ClipMethodName(clip)));
    }
    if (clip != ClipMethod::kZScore && clip_value >= 1) {
      return absl::InvalidArgumentError(absl::StrFormat("clip fraction %g for %s must be below 1",
                                                        clip_value, ClipMethodName(clip)));
    }
  }
  return absl::OkStatus();
}

std::string RtnSpec::Name() const {
  std::string blocks = block_size == kBlockTensor ? "tensor"
                       : block_size == kBlockRow  ? "row"
                                                  : absl::StrCat(block_size);
  std::string name = absl::StrFormat("INT%d b%s", bits, blocks);
  if (clip != ClipMethod::kNone) {
    absl::StrAppendFormat(&name, " %s=%g", ClipMethodName(clip), clip_value);
  }
  return name;
}

float RtnQuantizeValue(float w, float clip, float min, float step, int levels) {
  const float v = std::min(std::max(w, -clip), clip);
  if (!(step > 0)) return min;
  float code = std::nearbyint((v - min) / step);  // ties to even, as torch.round and numpy
  code = std::min(std::max(code, 0.f), static_cast<float>(levels));
  return min + code * step;
}

absl::StatusOr<std::unique_ptr<RtnTensor>> RtnTensor::Make(const Matrix& w, const RtnSpec& spec,
                                                           const std::vector<KeptElement>& keep) {
  return Build(w, spec, keep, /*round=*/true);
}

absl::StatusOr<std::unique_ptr<RtnTensor>> RtnTensor::MakeClipOnly(
    const Matrix& w, const RtnSpec& spec, const std::vector<KeptElement>& keep) {
  return Build(w, spec, keep, /*round=*/false);
}

absl::StatusOr<std::unique_ptr<RtnTensor>> RtnTensor::Build(const Matrix& w, const RtnSpec& spec,
                                                            const std::vector<KeptElement>& keep,
                                                            bool round) {
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  std::unique_ptr<RtnTensor> t(new RtnTensor());
  t->round_ = round;
  t->rows_ = w.rows;
  t->cols_ = w.cols;
  t->levels_ = (1 << spec.bits) - 1;
  const int64_t n = w.rows * w.cols;
  t->block_elements_ = spec.block_size == kBlockTensor ? n
                       : spec.block_size == kBlockRow  ? w.cols
                                                       : std::min(spec.block_size, n);
  std::vector<float> values(n);
  for (int64_t r = 0; r < w.rows; ++r) w.RowToFloat(r, &values[r * w.cols]);
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("weight [%d, %d] is %g: only finite weights can be quantized", i / w.cols,
                          i % w.cols, values[i]));
    }
  }
  for (const KeptElement& k : keep) {
    if (k.row < 0 || k.row >= w.rows || k.col < 0 || k.col >= w.cols) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "kept element [%d, %d] outside the tensor [%d, %d]", k.row, k.col, w.rows, w.cols));
    }
    const int64_t i = k.row * w.cols + k.col;
    t->kept_.emplace_back(i, values[i]);
  }
  std::sort(t->kept_.begin(), t->kept_.end());

  const int64_t blocks = (n + t->block_elements_ - 1) / t->block_elements_;
  const float no_clip = std::numeric_limits<float>::infinity();
  t->clip_.assign(blocks, no_clip);
  std::vector<float> magnitudes;
  if (spec.clip == ClipMethod::kTensorTop) {
    magnitudes.resize(n);
    for (int64_t i = 0; i < n; ++i) magnitudes[i] = std::fabs(values[i]);
    t->clip_.assign(blocks, static_cast<float>(LinearQuantile(magnitudes, 1 - spec.clip_value)));
  }
  t->min_.resize(blocks);
  t->step_.resize(blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * t->block_elements_;
    const int64_t count = std::min(t->block_elements_, n - begin);
    const float* block = &values[begin];
    if (spec.clip == ClipMethod::kZScore) {
      t->clip_[b] = static_cast<float>(MeanPlusZStd(block, count, spec.clip_value));
    } else if (spec.clip == ClipMethod::kBlockTop) {
      magnitudes.resize(count);
      for (int64_t i = 0; i < count; ++i) magnitudes[i] = std::fabs(block[i]);
      t->clip_[b] = static_cast<float>(LinearQuantile(magnitudes, 1 - spec.clip_value));
    }
    const float clip = t->clip_[b];
    float lo = no_clip, hi = -no_clip;
    for (int64_t i = 0; i < count; ++i) {
      const float v = std::min(std::max(block[i], -clip), clip);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    t->min_[b] = lo;
    t->step_[b] = (hi - lo) / static_cast<float>(t->levels_);
  }
  std::vector<float> quantized = values;
  t->Apply(0, w.rows, w.cols, quantized.data());
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(quantized[i]) - values[i];
    t->squared_error_ += d * d;
  }
  return t;
}

void RtnTensor::Apply(int64_t first_row, int64_t rows, int64_t cols, float* values) const {
  const int64_t begin = first_row * cols_, end = begin + rows * cols;
  for (int64_t i = begin; i < end;) {
    const int64_t b = i / block_elements_;
    const int64_t stop = std::min(end, (b + 1) * block_elements_);
    const float clip = clip_[b], min = min_[b], step = step_[b];
    if (round_) {
      for (; i < stop; ++i) {
        float& v = values[i - begin];
        v = RtnQuantizeValue(v, clip, min, step, levels_);
      }
    } else {
      for (; i < stop; ++i) values[i - begin] = std::min(std::max(values[i - begin], -clip), clip);
    }
  }
  auto it =
      std::lower_bound(kept_.begin(), kept_.end(), begin,
                       [](const std::pair<int64_t, float>& k, int64_t i) { return k.first < i; });
  for (; it != kept_.end() && it->first < end; ++it) values[it->first - begin] = it->second;
}

}  // namespace superweight
