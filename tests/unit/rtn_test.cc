#include "engine/quant/rtn.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace superweight::rtn_test {
namespace {

Matrix F32Matrix(const std::vector<float>& values, int64_t rows, int64_t cols) {
  return Matrix::Make(DType::kF32, rows, cols, reinterpret_cast<const uint8_t*>(values.data()));
}

std::vector<float> Quantized(const RtnTensor& t, const std::vector<float>& values, int64_t rows,
                             int64_t cols) {
  std::vector<float> out = values;
  t.Apply(0, rows, cols, out.data());
  return out;
}

// The definition, written out for one block of stored values.
std::vector<float> Definition(std::vector<float> block, int bits, float clip) {
  for (float& v : block) v = std::min(std::max(v, -clip), clip);
  const float lo = *std::min_element(block.begin(), block.end());
  const float hi = *std::max_element(block.begin(), block.end());
  const float step = (hi - lo) / static_cast<float>((1 << bits) - 1);
  for (float& v : block) {
    v = step > 0 ? lo + std::nearbyint((v - lo) / step) * step : lo;
  }
  return block;
}

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(Rtn, MatchesTheDefinitionPerBlockOfConsecutiveElements) {
  const int64_t rows = 24, cols = 40;  // blocks of 64 span rows; the last one is shorter
  std::vector<float> w = Random(rows * cols, 1);
  for (int bits : {2, 3, 4, 8}) {
    for (int64_t block : {int64_t{64}, kBlockRow, kBlockTensor, int64_t{5000}}) {
      auto t = RtnTensor::Make(F32Matrix(w, rows, cols), {bits, block, ClipMethod::kNone, 0}, {});
      ASSERT_TRUE(t.ok()) << t.status();
      const int64_t n = rows * cols;
      const int64_t size = block == kBlockTensor ? n
                           : block == kBlockRow  ? cols
                                                 : std::min(block, n);
      const std::vector<float> q = Quantized(**t, w, rows, cols);
      std::vector<float> expected;
      for (int64_t b = 0; b < n; b += size) {
        std::vector<float> part(w.begin() + b, w.begin() + std::min(n, b + size));
        for (float v : Definition(part, bits, std::numeric_limits<float>::infinity())) {
          expected.push_back(v);
        }
      }
      ASSERT_EQ(q, expected) << bits << " bits, block " << block;
      EXPECT_EQ((*t)->blocks(), (n + size - 1) / size);
      // At most 2^bits distinct values a block.
      std::vector<float> first(q.begin(), q.begin() + size);
      std::sort(first.begin(), first.end());
      EXPECT_LE(std::unique(first.begin(), first.end()) - first.begin(), 1 << bits);
    }
  }
}

TEST(Rtn, AppliesToAnyRowRangeAsToTheWholeTensor) {
  const int64_t rows = 10, cols = 32;
  std::vector<float> w = Random(rows * cols, 2);
  auto t = RtnTensor::Make(F32Matrix(w, rows, cols), {3, 48, ClipMethod::kNone, 0}, {{4, 7}});
  ASSERT_TRUE(t.ok());
  const std::vector<float> whole = Quantized(**t, w, rows, cols);
  std::vector<float> part(w.begin() + 3 * cols, w.begin() + 6 * cols);
  (*t)->Apply(3, 3, cols, part.data());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), whole.begin() + 3 * cols));
  EXPECT_EQ(whole[4 * cols + 7], w[4 * cols + 7]);  // kept
}

TEST(Rtn, ClippingKeepsAPlantedOutlierFromWideningTheStep) {
  const int64_t rows = 16, cols = 64;
  std::vector<float> w = Random(rows * cols, 3);
  w[5 * cols + 9] = 3.0f;  // a super weight: 150 standard deviations
  const Matrix m = F32Matrix(w, rows, cols);
  auto plain = RtnTensor::Make(m, {4, kBlockTensor, ClipMethod::kNone, 0}, {});
  auto aware = RtnTensor::Make(m, {4, kBlockTensor, ClipMethod::kZScore, 9}, {{5, 9}});
  ASSERT_TRUE(plain.ok() && aware.ok());
  // Plain RTN: the outlier's range leaves the ordinary weights on one or two levels.
  const std::vector<float> q_plain = Quantized(**plain, w, rows, cols);
  const std::vector<float> q_aware = Quantized(**aware, w, rows, cols);
  EXPECT_EQ(q_aware[5 * cols + 9], 3.0f);
  double err_plain = 0, err_aware = 0;
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (i == 5 * cols + 9) continue;
    err_plain += std::pow(q_plain[i] - w[i], 2);
    err_aware += std::pow(q_aware[i] - w[i], 2);
  }
  EXPECT_LT(err_aware * 10, err_plain);
  EXPECT_LT((*aware)->squared_error(), (*plain)->squared_error());
  // The clip bound is mean|w| + 9 std|w|: every other quantized value lies within it.
  double sum = 0, sq = 0;
  const int64_t n = rows * cols;
  for (float v : w) sum += std::fabs(v);
  for (float v : w) sq += std::pow(std::fabs(v) - sum / n, 2);
  const float bound = static_cast<float>(sum / n + 9 * std::sqrt(sq / (n - 1)));
  for (int64_t i = 0; i < n; ++i) {
    if (i != 5 * cols + 9) {
      EXPECT_LE(std::fabs(q_aware[i]), bound * 1.0001f);
    }
  }
}

TEST(Rtn, TopFractionClipsAtTheQuantile) {
  std::vector<float> w(1000);
  for (int i = 0; i < 1000; ++i) w[i] = (i % 2 ? 1.f : -1.f) * static_cast<float>(i) / 1000.f;
  const Matrix m = F32Matrix(w, 10, 100);
  for (ClipMethod method : {ClipMethod::kBlockTop, ClipMethod::kTensorTop}) {
    auto t = RtnTensor::Make(m, {8, kBlockTensor, method, 0.01}, {});
    ASSERT_TRUE(t.ok());
    const std::vector<float> q = Quantized(**t, w, 10, 100);
    // |w| runs 0 .. 0.999 in steps of 0.001: the 0.99 quantile is 0.98901.
    const float top = *std::max_element(q.begin(), q.end());
    EXPECT_NEAR(top, 0.98901f, 0.98901f / 255);
    EXPECT_LT(top, 0.995f);
  }
}

TEST(Rtn, ConstantBlocksAreExact) {
  std::vector<float> w(64, 0.25f);
  std::fill(w.begin() + 32, w.end(), 0.f);
  auto t = RtnTensor::Make(F32Matrix(w, 2, 32), {4, 32, ClipMethod::kNone, 0}, {});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Quantized(**t, w, 2, 32), w);
  EXPECT_EQ((*t)->squared_error(), 0);
}

TEST(Rtn, RefusesBadSpecsAndNonFiniteWeights) {
  std::vector<float> w = Random(64, 4);
  const Matrix m = F32Matrix(w, 2, 32);
  for (RtnSpec bad :
       {RtnSpec{1, 32}, RtnSpec{9, 32}, RtnSpec{4, 1}, RtnSpec{4, -5},
        RtnSpec{4, 32, ClipMethod::kZScore, 0}, RtnSpec{4, 32, ClipMethod::kZScore, std::nan("")},
        RtnSpec{4, 32, ClipMethod::kBlockTop, 1.5}}) {
    auto t = RtnTensor::Make(m, bad, {});
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << bad.Name();
  }
  EXPECT_EQ(RtnTensor::Make(m, {}, {{2, 0}}).status().code(), absl::StatusCode::kInvalidArgument);
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> v = w;
    v[33] = bad;
    auto t = RtnTensor::Make(F32Matrix(v, 2, 32), {}, {});
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find("[1, 1]"), std::string::npos) << t.status();
  }
  EXPECT_EQ(ParseClipMethod("zz").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseClipMethod("block_top"), ClipMethod::kBlockTop);
}

}  // namespace
}  // namespace superweight::rtn_test
