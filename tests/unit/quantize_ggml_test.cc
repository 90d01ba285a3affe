#include "engine/formats/quantize_ggml.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/formats/dequantize.h"
#include "engine/formats/gguf_requantize.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace superweight::quantize_ggml_test {
namespace {

using ::testing::HasSubstr;

const DType kQuantizable[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                              DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0};
// The K-quants, 256-value super-blocks: tested apart (their bounds are per 32-value sub-block).
const DType kKQuantizable[] = {DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                               DType::kQ6_K};
// The K types with 6-bit (or 8-bit) sub-block scales, whose error KQuantErrorBound states.
const DType kKQuantFineScales[] = {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
// The low-bit K types: 16-value sub-blocks, 4 (Q2_K) or 8 (Q3_K) codes.
const DType kKQuantLowBit[] = {DType::kQ2_K, DType::kQ3_K};

std::vector<uint8_t> Quantize(DType type, const std::vector<float>& x) {
  std::vector<uint8_t> out(*StorageBytes(type, x.size()));
  absl::Status s = QuantizeRow(type, x.data(), static_cast<int64_t>(x.size()), out.data());
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::vector<float> RoundTrip(DType type, const std::vector<float>& x) {
  std::vector<uint8_t> q = Quantize(type, x);
  std::vector<float> y(x.size());
  DequantizeRow(type, q.data(), static_cast<int64_t>(x.size()), y.data());
  return y;
}

// What storing v as f16 can cost: half a unit in the last place, which below 2^-14 (f16's
// subnormals: small blocks' scales) is the fixed 2^-25.
double F16Error(double v) {
  return std::max(std::fabs(v) * std::ldexp(1.0, -11), std::ldexp(1.0, -25));
}

// The largest error the format allows for element j of block x[0..block): half a step where the
// code rounds, a whole step for the one value Q4_0/Q5_0 clip (the extreme of the sign opposite
// to the block's largest, code 16 -> 15), plus what storing the scale (times the largest code)
// and the minimum in f16 costs.
double ErrorBound(DType type, const float* x, int64_t block, int64_t j) {
  float amax = 0, min = x[0], max = x[0];
  for (int64_t k = 0; k < block; ++k) {
    amax = std::max(amax, std::fabs(x[k]));
    min = std::min(min, x[k]);
    max = std::max(max, x[k]);
  }
  const double slack = 1.001;
  switch (type) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return F16Error(x[j]);
    case DType::kBF16:
      return std::fabs(x[j]) * std::ldexp(1.0, -8);
    case DType::kQ4_0:
      return slack * (amax / 8.0 + 8 * F16Error(amax / 8.0));
    case DType::kQ5_0:
      return slack * (amax / 16.0 + 16 * F16Error(amax / 16.0));
    case DType::kQ4_1: {
      const double d = (double{max} - min) / 15.0;
      return slack * (d / 2 + 15 * F16Error(d) + F16Error(min));
    }
    case DType::kQ5_1: {
      const double d = (double{max} - min) / 31.0;
      return slack * (d / 2 + 31 * F16Error(d) + F16Error(min));
    }
    case DType::kQ8_0:
      return slack * (amax / 254.0 + 127 * F16Error(amax / 127.0));
    default:
      return 0;
  }
}

void ExpectWithinBounds(DType type, const std::vector<float>& x, const std::vector<float>& y) {
  const int64_t block = 32;  // the float types' bounds are per element, any grouping works
  for (size_t j = 0; j < x.size(); ++j) {
    const float* b = x.data() + j / block * block;
    const double bound = ErrorBound(type, b, block, static_cast<int64_t>(j % block));
    ASSERT_LE(std::fabs(double{y[j]} - x[j]), bound)
        << DTypeName(type) << " element " << j << ": " << x[j] << " -> " << y[j];
  }
}

// Rows of normal values whose scale changes block to block (1e-3 to 10), as weights' do.
std::vector<float> VariedRow(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> log_scale(-3.f, 1.f);
  std::vector<float> x(n);
  for (int64_t b = 0; b < n; b += 32) {
    const float scale = std::pow(10.f, log_scale(rng));
    for (int64_t j = b; j < std::min(n, b + 32); ++j) x[j] = normal(rng) * scale;
  }
  return x;
}

TEST(QuantizeGgml, RoundTripsWithinEachTypesBound) {
  const std::vector<float> x = VariedRow(4096, 7);
  for (DType type : kQuantizable) {
    SCOPED_TRACE(DTypeName(type));
    ExpectWithinBounds(type, x, RoundTrip(type, x));
  }
  EXPECT_EQ(RoundTrip(DType::kF32, x), x);
}

TEST(QuantizeGgml, PlantedOutlierIsKeptToTheScalesPrecision) {
  std::vector<float> x = VariedRow(256, 11);
  for (float& v : x) v *= 0.02f / 3;
  x[37] = 5.876f;   // a super-weight-like value in block 1
  x[200] = -4.25f;  // and a negative one in block 6
  for (DType type : kQuantizable) {
    SCOPED_TRACE(DTypeName(type));
    const std::vector<float> y = RoundTrip(type, x);
    ExpectWithinBounds(type, x, y);
    // The block's extreme sits on an end code, so it comes back as d (or min) in f16 times an
    // integer: within f16's relative precision (Q4_1/Q5_1: plus the minimum's rounding).
    for (int j : {37, 200}) EXPECT_NEAR(y[j], x[j], std::fabs(x[j]) * std::ldexp(1.0, -10)) << j;
  }
}

TEST(QuantizeGgml, ConstantBlock) {
  const std::vector<float> x(64, 0.3f);
  const float in_f16 = HalfToFloat(GgmlFloatToHalf(0.3f));
  for (DType type : kQuantizable) {
    SCOPED_TRACE(DTypeName(type));
    const std::vector<float> y = RoundTrip(type, x);
    for (float v : y) EXPECT_NEAR(v, 0.3f, 0.3f * std::ldexp(1.0, -8));
  }
  // Q4_1 of a constant: scale 0, minimum the value, every code 0.
  const std::vector<uint8_t> q = Quantize(DType::kQ4_1, x);
  uint16_t d, m;
  std::memcpy(&d, q.data(), 2);
  std::memcpy(&m, q.data() + 2, 2);
  EXPECT_EQ(d, 0);
  EXPECT_EQ(HalfToFloat(m), in_f16);
  EXPECT_TRUE(std::all_of(q.begin() + 4, q.begin() + 20, [](uint8_t b) { return b == 0; }));
  EXPECT_THAT(RoundTrip(DType::kQ4_1, x), ::testing::Each(in_f16));
}

TEST(QuantizeGgml, AllZeroBlockHasLlamaCppsBytes) {
  const std::vector<float> x(32, 0.f);
  // Q4_0/Q5_0 take their scale as max / -8 (-16) with max starting at +0, so a zero block stores
  // d = -0 (0x8000), and its zeros land on the middle code (8, 16).
  std::vector<uint8_t> q4_0 = {0x00, 0x80};
  q4_0.resize(18, 0x88);
  EXPECT_EQ(Quantize(DType::kQ4_0, x), q4_0);
  std::vector<uint8_t> q5_0 = {0x00, 0x80, 0xFF, 0xFF, 0xFF, 0xFF};
  q5_0.resize(22, 0x00);
  EXPECT_EQ(Quantize(DType::kQ5_0, x), q5_0);
  EXPECT_EQ(Quantize(DType::kQ4_1, x), std::vector<uint8_t>(20, 0));
  EXPECT_EQ(Quantize(DType::kQ5_1, x), std::vector<uint8_t>(24, 0));
  EXPECT_EQ(Quantize(DType::kQ8_0, x), std::vector<uint8_t>(34, 0));
  for (DType type : kQuantizable) {
    EXPECT_THAT(RoundTrip(type, x), ::testing::Each(0.f)) << DTypeName(type);
  }
}

TEST(QuantizeGgml, Q8_0RoundsHalfAwayFromZero) {
  // amax 127 makes d = 1 and id = 1: codes are roundf of the values themselves.
  std::vector<float> x(32, 0.f);
  x[0] = 127.f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.5f;
  x[4] = -1.5f;
  const std::vector<uint8_t> q = Quantize(DType::kQ8_0, x);
  EXPECT_EQ(static_cast<int8_t>(q[2]), 127);
  EXPECT_EQ(static_cast<int8_t>(q[3]), 3);
  EXPECT_EQ(static_cast<int8_t>(q[4]), -3);
  EXPECT_EQ(static_cast<int8_t>(q[5]), 1);
  EXPECT_EQ(static_cast<int8_t>(q[6]), -2);
}

TEST(QuantizeGgml, RefusesNonFiniteValuesNamingTheElement) {
  std::vector<DType> types(std::begin(kQuantizable), std::end(kQuantizable));
  types.insert(types.end(), std::begin(kKQuantizable), std::end(kKQuantizable));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    for (DType type : types) {
      std::vector<float> x(256, 1.f);
      x[45] = bad;
      std::vector<uint8_t> out(*StorageBytes(type, 256), 0xAB);
      absl::Status s = QuantizeRow(type, x.data(), 256, out.data());
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << DTypeName(type);
      EXPECT_THAT(std::string(s.message()), HasSubstr("element 45")) << DTypeName(type);
      EXPECT_THAT(out, ::testing::Each(0xAB)) << "nothing written";
    }
  }
}

TEST(QuantizeGgml, RefusesPartialBlocks) {
  std::vector<float> x(576, 1.f);
  std::vector<uint8_t> out(1024);
  for (DType type : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0}) {
    absl::Status s = QuantizeRow(type, x.data(), 48, out.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << DTypeName(type);
    EXPECT_THAT(std::string(s.message()), HasSubstr("48")) << s;
  }
  EXPECT_TRUE(QuantizeRow(DType::kF16, x.data(), 48, out.data()).ok());
  for (DType type : kKQuantizable) {
    absl::Status s = QuantizeRow(type, x.data(), 576, out.data());  // 2.25 super-blocks
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << DTypeName(type);
    EXPECT_THAT(std::string(s.message()), HasSubstr("576")) << s;
  }
}

// Sub-block j's worst error for a K type of `levels` codes: one step of min-max round-to-nearest
// over the 32 values' own range (the scale search may trade the ends for the middle; Q6_K's
// symmetric 64 codes over 16 values step no wider), plus what storing the sub-block scales (and
// mins) in 6 or 8 bits against the super-block's largest (and that in f16) can cost at the
// largest code.
double KQuantErrorBound(const float* super_block, int j, int levels) {
  double largest_range = 0, range_j = 0;
  for (int s = 0; s < 8; ++s) {
    const float* sub = super_block + 32 * s;
    const double lo = std::min(0.f, *std::min_element(sub, sub + 32));
    const double range = *std::max_element(sub, sub + 32) - lo;
    largest_range = std::max(largest_range, range);
    if (s == j) range_j = range;
  }
  return range_j / (levels - 1) + 1.01 * largest_range / 63 + 1e-30;
}

void ExpectKQuantWithinBounds(DType type, const std::vector<float>& x,
                              const std::vector<float>& y) {
  const int levels = type == DType::kQ4_K ? 16 : type == DType::kQ5_K ? 32 : 64;
  for (size_t i = 0; i < x.size(); ++i) {
    const float* super_block = x.data() + i / 256 * 256;
    const double bound = KQuantErrorBound(super_block, static_cast<int>(i % 256 / 32), levels);
    ASSERT_LE(std::fabs(double{y[i]} - x[i]), bound)
        << DTypeName(type) << " element " << i << ": " << x[i] << " -> " << y[i];
  }
}

TEST(QuantizeGgmlK, RoundTripsWithinTheSubBlocksStep) {
  // One scale per super-block (weights' rows), and a scale per 32 values (1e-3 to 10): small
  // sub-blocks beside large ones lose their 6-bit scale, which the bound allows.
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<float> weights_like(256 * 64);
  for (float& v : weights_like) v = normal(rng);
  for (const std::vector<float>& x : {weights_like, VariedRow(256 * 64, 9)}) {
    for (DType type : kKQuantFineScales) {
      SCOPED_TRACE(DTypeName(type));
      const std::vector<float> y = RoundTrip(type, x);
      ExpectKQuantWithinBounds(type, x, y);
      double error2 = 0, value2 = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        error2 += (double{y[i]} - x[i]) * (double{y[i]} - x[i]);
        value2 += double{x[i]} * x[i];
      }
      if (&x == &weights_like) {
        // Q4_K's error is about a tenth of the values' RMS; each further bit halves it.
        const double bits = type == DType::kQ4_K ? 4 : type == DType::kQ5_K ? 5 : 6;
        EXPECT_LT(std::sqrt(error2 / value2), 0.12 * std::ldexp(1.0, 4 - static_cast<int>(bits)));
      }
    }
  }
}

TEST(QuantizeGgmlK, PlantedOutlierIsKept) {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<float> x(512);
  for (float& v : x) v = normal(rng);
  x[37] = 5.876f;   // a super-weight-like value in sub-block 1
  x[300] = -4.25f;  // a negative one in the second super-block
  for (DType type : kKQuantFineScales) {
    SCOPED_TRACE(DTypeName(type));
    const std::vector<float> y = RoundTrip(type, x);
    ExpectKQuantWithinBounds(type, x, y);
    // The search weights each value by |x| plus the sub-block's RMS: the outlier dominates its
    // sub-block's fit and comes back within a percent.
    for (int j : {37, 300}) EXPECT_NEAR(y[j], x[j], 0.01 * std::fabs(x[j])) << j;
  }
}

// Q2_K and Q3_K: each value within two of its 16-value sub-block's steps (the search trades
// the ends for the middle, and 4-bit or 6-bit sub-block scales move the grid), plus the
// rounding of the largest sub-block's scale; and a planted outlier, which sets its sub-block's
// scale, comes back within a percent.
TEST(QuantizeGgmlK, LowBitTypesStayWithinTheirSubBlocksSteps) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<float> x(256 * 32);
  for (float& v : x) v = normal(rng);
  x[37] = 5.876f;
  x[300] = -4.25f;
  for (DType type : kKQuantLowBit) {
    SCOPED_TRACE(DTypeName(type));
    const int levels = type == DType::kQ2_K ? 4 : 8;
    const std::vector<float> y = RoundTrip(type, x);
    for (size_t b = 0; b < x.size(); b += 256) {
      double largest_range = 0;
      for (size_t j = b; j < b + 256; j += 16) {
        const auto [lo, hi] = std::minmax_element(x.begin() + j, x.begin() + j + 16);
        largest_range = std::max(largest_range, double{*hi} - std::min(0.f, *lo));
      }
      for (size_t j = b; j < b + 256; j += 16) {
        const auto [lo, hi] = std::minmax_element(x.begin() + j, x.begin() + j + 16);
        const double range = double{*hi} - std::min(0.f, *lo);
        const double bound = 2 * range / (levels - 1) + largest_range / 15 + 1e-30;
        for (size_t i = j; i < j + 16; ++i) {
          ASSERT_LE(std::fabs(double{y[i]} - x[i]), bound) << "element " << i;
        }
      }
    }
    for (int j : {37, 300}) EXPECT_NEAR(y[j], x[j], 0.01 * std::fabs(x[j])) << j;
  }
}

TEST(QuantizeGgmlK, ConstantAndZeroRows) {
  // (Far smaller constants lose more: d = c / 15 / 63 becomes an f16 subnormal below ~0.06.)
  for (float c : {0.3f, -0.3f, 2.5f}) {
    const std::vector<float> x(512, c);
    for (DType type : kKQuantizable) {
      const std::vector<float> y = RoundTrip(type, x);
      for (float v : y) EXPECT_NEAR(v, c, std::fabs(c) * 0.01) << DTypeName(type) << " " << c;
    }
  }
  // Zeros: every scale and min 0 (mins are -0 internally, stored as 0), every code 0; Q6_K
  // writes its all-but-zero super-blocks as zero bytes outright.
  const std::vector<float> zeros(256, 0.f);
  EXPECT_EQ(Quantize(DType::kQ4_K, zeros), std::vector<uint8_t>(144, 0));
  EXPECT_EQ(Quantize(DType::kQ5_K, zeros), std::vector<uint8_t>(176, 0));
  EXPECT_EQ(Quantize(DType::kQ6_K, zeros), std::vector<uint8_t>(210, 0));
  for (DType type : kKQuantizable) {
    EXPECT_THAT(RoundTrip(type, zeros), ::testing::Each(0.f)) << DTypeName(type);
  }
}

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return bytes;
}

// llama.cpp's own bytes (quantize_row_q*_K_ref of the build the oracle tests use) for one
// super-block of exact values: a ramp of multiples of 1/64, an outlier, a zero sub-block.
// tests/oracle/test_ggml_quantizers.py compares millions more against it.
TEST(QuantizeGgmlK, OneSuperBlockHasLlamaCppsBytes) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = static_cast<float>((i * 37 + 11) % 61 - 30) / 64;
  x[77] = 3.5f;
  std::fill(x.begin() + 200, x.begin() + 232, 0.f);
  EXPECT_EQ(Quantize(DType::kQ4_K, x),
            FromHex("391cc01f0f0f3f0ffcfdf5fdcfcf5cff933cc66009933cd6701aa44dd7711aa44de7812b"
                    "b55ee8822bc55ef8923cc66f60029133d17012a143d17012a14fe28022b153e28022c153"
                    "f29033c1630290333cd6701aa44dd7711aa44de7812bb55ee8822bb55ef8923cc66f0993"
                    "3cc660098b838f87808c848fe88828b858f88828c868f89838c868089838d87818a848d8"));
  EXPECT_EQ(Quantize(DType::kQ5_K, x),
            FromHex("2318ce1f0f0e3f0ffefbfbffdfff5cefd2a1ca90a9d2a1cad0e952e16ad4e95af16bd2e9"
                    "5af16b52e95ad16b52e14ad13669add003477acee114588bdff225799ce003368aadf124"
                    "479bbef23558acdfd0144186b3e0255296c3f03562afd4014572b7e4115582c7f4216693"
                    "d70431768abde124589bcef23569acdf03467abde014578bcef125689cdf023679ade013"
                    "06070f0f0008080fc1014171a1e1115181b1f1216191d1013171a1e1114181b1"));
  EXPECT_EQ(Quantize(DType::kQ6_K, x),
            FromHex("4cf32ad1174ef52cd30940e72e150b3227b059e27b059e37c059e37c15ae37c1a70c95ea"
                    "70d92eb71d92fb41d93fc41d8df46fc931ab128de75ec930aa157ce7b8eba0eb1eda1ec1"
                    "0d010c00040f030f0e070009030c050e07010a030c050e080d090c000c0f0b0f22feb2fe"
                    "c105c1941c83ea51c83ea51c73ea51c73e950c736813ad14e26813ad54e26917ad44e2a9"
                    "18a247ddb618e147ddb208e1471cb208a38db49288a39db42269e72ea8226de7cd4bc18e"
                    "04cd4b008e04c14b008e47c111ef10f080ef10110fef0f110f00f1113a13"));
}

TEST(QuantizeGgmlK, FallbackTypesAreLlamaCpps) {
  // SmolLM2's hidden size, 576 = 2.25 x 256: llama-quantize writes Q5_0 for Q4_K there.
  EXPECT_EQ(FallbackTypeForRows(DType::kQ4_K, 576), DType::kQ5_0);
  EXPECT_EQ(FallbackTypeForRows(DType::kQ5_K, 576), DType::kQ5_1);
  EXPECT_EQ(FallbackTypeForRows(DType::kQ6_K, 576), DType::kQ8_0);
  EXPECT_EQ(FallbackTypeForRows(DType::kQ2_K, 576), DType::kQ4_0);
  EXPECT_EQ(FallbackTypeForRows(DType::kQ3_K, 1536), DType::kQ3_K);
  EXPECT_EQ(FallbackTypeForRows(DType::kQ4_K, 1536), DType::kQ4_K);
  EXPECT_EQ(FallbackTypeForRows(DType::kQ4_K, 100), DType::kF16);  // not whole Q5_0 blocks
  // The 32-value types have no fallback: llama.cpp refuses such tensors.
  EXPECT_EQ(FallbackTypeForRows(DType::kQ4_0, 100), DType::kQ4_0);
  EXPECT_EQ(FallbackTypeForRows(DType::kQ8_0, 576), DType::kQ8_0);
}

TEST(QuantizeGgml, TensorIsItsRowsQuantizedOneByOne) {
  const int64_t rows = 3, cols = 96;
  std::vector<float> x = VariedRow(rows * cols, 5);
  auto q = QuantizeTensor(DType::kQ5_1, x.data(), rows, cols);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<uint8_t> want;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> row(x.begin() + r * cols, x.begin() + (r + 1) * cols);
    const std::vector<uint8_t> b = Quantize(DType::kQ5_1, row);
    want.insert(want.end(), b.begin(), b.end());
  }
  EXPECT_EQ(*q, want);
  x[2 * cols + 7] = std::numeric_limits<float>::quiet_NaN();
  auto bad = QuantizeTensor(DType::kQ5_1, x.data(), rows, cols);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("row 2: element 7"));
  EXPECT_EQ(QuantizeTensor(DType::kQ8_0, x.data(), 2, 40).status().code(),
            absl::StatusCode::kInvalidArgument);
}

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TEST(QuantizeGgml, FloatToHalfRoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // inf and NaN
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    ASSERT_EQ(GgmlFloatToHalf(f), h) << std::hex << h;
    // Halfway to the next half up in magnitude: a tie, which goes to the even code.
    if ((h & 0x7FFF) == 0x7BFF) continue;
    const float next = HalfToFloat(static_cast<uint16_t>(h + 1));
    const float mid = (f + next) / 2;  // exact: halves have 11 significant bits
    ASSERT_EQ(GgmlFloatToHalf(mid), (h & 1) ? h + 1 : h) << std::hex << h;
    ASSERT_EQ(GgmlFloatToHalf(std::nextafter(mid, 2 * next)), h + 1) << std::hex << h;
    ASSERT_EQ(GgmlFloatToHalf(std::nextafter(mid, f - (next - f))), h) << std::hex << h;
  }
  EXPECT_EQ(GgmlFloatToHalf(65519.99f), 0x7BFF);
  EXPECT_EQ(GgmlFloatToHalf(65520.f), 0x7C00);  // the tie with 65536 goes to infinity
  EXPECT_EQ(GgmlFloatToHalf(-1e10f), 0xFC00);
  EXPECT_EQ(GgmlFloatToHalf(std::ldexp(1.f, -25)), 0);  // tie with the smallest subnormal
  EXPECT_EQ(GgmlFloatToHalf(std::nextafter(std::ldexp(1.f, -25), 1.f)), 1);
  EXPECT_EQ(GgmlFloatToHalf(-std::ldexp(1.f, -30)), 0x8000);
  EXPECT_EQ(GgmlFloatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(GgmlFloatToHalf(std::numeric_limits<float>::quiet_NaN()) & 0x7E00, 0x7E00);
}

TEST(QuantizeGgml, FloatToBFloat16KeepsSubnormalsAndQuietsNaN) {
  EXPECT_EQ(GgmlFloatToBFloat16(1.f), 0x3F80);
  EXPECT_EQ(GgmlFloatToBFloat16(FromBits(0x3F808000)), 0x3F80);  // tie, even stays
  EXPECT_EQ(GgmlFloatToBFloat16(FromBits(0x3F818000)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(GgmlFloatToBFloat16(FromBits(0x3F808001)), 0x3F81);
  EXPECT_EQ(GgmlFloatToBFloat16(FromBits(0x00012345)), 0x0001);  // subnormal kept...
  EXPECT_EQ(FloatToBFloat16(FromBits(0x00012345)), 0x0000);      // ...which the engine's flushes
  EXPECT_EQ(GgmlFloatToBFloat16(FromBits(0x7F800001)), 0x7FC0);  // signalling NaN made quiet
  EXPECT_EQ(GgmlFloatToBFloat16(FromBits(0xFF800000)), 0xFF80);  // -inf stays
  EXPECT_EQ(GgmlFloatToBFloat16(FromBits(0x7F7FFFFF)), 0x7F80);  // FLT_MAX rounds to inf
}

TEST(DType, GgmlTypeIdIsTheInverseOfDTypeFromGgml) {
  for (int t = 0; t < kDTypeCount; ++t) {
    const DType type = static_cast<DType>(t);
    auto back = DTypeFromGgml(GgmlTypeId(type));
    ASSERT_TRUE(back.ok()) << DTypeName(type);
    EXPECT_EQ(*back, type);
    EXPECT_EQ(*DTypeFromName(DTypeName(type)), type);
  }
  EXPECT_EQ(GgmlTypeId(DType::kBF16), 30u);
  EXPECT_EQ(GgmlTypeId(DType::kQ8_0), 8u);
  EXPECT_EQ(DTypeFromName("IQ4_NL").status().code(), absl::StatusCode::kInvalidArgument);
}

// Every type's identity in files, pinned: geometry (ggml-common.h), ggml_type (ggml.h),
// llama_ftype (llama.h; a K type's file is its small mix, Q4_K_S and Q5_K_S, as llama-quantize
// --pure writes it), and what it can be converted to and from.
TEST(DType, TableMatchesGgml) {
  struct Expected {
    DType type;
    const char* name;
    int64_t block_elements, block_bytes;
    uint32_t ggml_type;
    int llama_ftype;  // -1: none
    bool quantizer, block_codes, block_code_offsets;
  };
  const Expected kExpected[] = {
      {DType::kF32, "F32", 1, 4, 0, 0, true, false, false},
      {DType::kF16, "F16", 1, 2, 1, 1, true, false, false},
      {DType::kBF16, "BF16", 1, 2, 30, 32, true, false, false},
      {DType::kQ4_0, "Q4_0", 32, 18, 2, 2, true, true, false},
      {DType::kQ4_1, "Q4_1", 32, 20, 3, 3, true, true, true},
      {DType::kQ5_0, "Q5_0", 32, 22, 6, 8, true, true, false},
      {DType::kQ5_1, "Q5_1", 32, 24, 7, 9, true, true, true},
      {DType::kQ8_0, "Q8_0", 32, 34, 8, 7, true, true, false},
      {DType::kQ4_K, "Q4_K", 256, 144, 12, 14, true, true, true},
      {DType::kQ5_K, "Q5_K", 256, 176, 13, 16, true, true, true},
      {DType::kQ6_K, "Q6_K", 256, 210, 14, 18, true, false, false},
      {DType::kQ2_K, "Q2_K", 256, 84, 10, 10, true, false, false},
      {DType::kQ3_K, "Q3_K", 256, 110, 11, 11, true, false, false},
  };
  for (const Expected& e : kExpected) {
    const DTypeTraits& t = Traits(e.type);
    EXPECT_STREQ(t.name, e.name);
    EXPECT_EQ(t.block_elements, e.block_elements) << e.name;
    EXPECT_EQ(t.block_bytes, e.block_bytes) << e.name;
    EXPECT_EQ(IsQuantized(e.type), e.block_elements > 1) << e.name;
    EXPECT_EQ(GgmlTypeId(e.type), e.ggml_type) << e.name;
    EXPECT_EQ(*DTypeFromGgml(e.ggml_type), e.type) << e.name;
    auto ftype = LlamaFileType(e.type);
    if (e.llama_ftype < 0) {
      EXPECT_EQ(ftype.status().code(), absl::StatusCode::kUnimplemented) << e.name;
    } else {
      ASSERT_TRUE(ftype.ok()) << e.name;
      EXPECT_EQ(*ftype, static_cast<uint32_t>(e.llama_ftype)) << e.name;
    }
    EXPECT_EQ(HasGgmlQuantizer(e.type), e.quantizer) << e.name;
    EXPECT_EQ(HasBlockCodes(e.type), e.block_codes) << e.name;
    EXPECT_EQ(BlockCodesHaveOffsets(e.type), e.block_code_offsets) << e.name;
  }
  for (uint32_t id : {4u, 5u, 9u, 15u, 16u, 29u, 31u, 39u, 1000u}) {
    EXPECT_EQ(DTypeFromGgml(id).status().code(), absl::StatusCode::kUnimplemented) << id;
  }
}

}  // namespace
}  // namespace superweight::quantize_ggml_test
