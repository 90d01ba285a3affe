#include "engine/formats/dequantize.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/runtime/cpu.h"
#include "gtest/gtest.h"

namespace superweight::dequantize_test {
namespace {

TEST(HalfToFloat, KnownValues) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x3800), 0.5f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_FLOAT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_FLOAT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  // A signaling NaN comes out quiet, as the F16C instruction makes it, whichever path runs.
  const uint16_t signaling[9] = {0x7C01, 0x7C01, 0x7C01, 0x7C01, 0x7C01,
                                 0x7C01, 0x7C01, 0x7C01, 0xFC01};
  float converted[9];
  DequantizeRow(DType::kF16, reinterpret_cast<const uint8_t*>(signaling), 9, converted);
  for (int i = 0; i < 9; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &converted[i], 4);
    EXPECT_EQ(bits & 0x7FFFFFFFu, 0x7FC02000u) << i;
  }
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f)), 1.0f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8))),
            1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(NAN))));
}

TEST(Dequantize, Q4_0Block) {
  uint8_t block[18];
  const uint16_t d = 0x3800;  // 0.5
  std::memcpy(block, &d, 2);
  for (int j = 0; j < 16; ++j) block[2 + j] = static_cast<uint8_t>((j & 0xF) | ((15 - j) << 4));
  float y[32];
  DequantizeRow(DType::kQ4_0, block, 32, y);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f);
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f);
  }
}

TEST(Dequantize, Q4_1BlockAddsMin) {
  uint8_t block[20];
  const uint16_t d = 0x3C00, m = 0xC000;  // 1.0, -2.0
  std::memcpy(block, &d, 2);
  std::memcpy(block + 2, &m, 2);
  for (int j = 0; j < 16; ++j) block[4 + j] = static_cast<uint8_t>(j | (j << 4));
  float y[32];
  DequantizeRow(DType::kQ4_1, block, 32, y);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j - 2.0f);
    EXPECT_EQ(y[j + 16], j - 2.0f);
  }
}

TEST(Dequantize, Q5_0UsesHighBits) {
  uint8_t block[22] = {};
  const uint16_t d = 0x3C00;
  std::memcpy(block, &d, 2);
  const uint32_t qh = 0x00010001;  // high bit of element 0 and of element 16
  std::memcpy(block + 2, &qh, 4);
  float y[32];
  DequantizeRow(DType::kQ5_0, block, 32, y);
  EXPECT_EQ(y[0], 0.0f);  // 16 - 16
  EXPECT_EQ(y[1], -16.0f);
  EXPECT_EQ(y[16], 0.0f);
  EXPECT_EQ(y[17], -16.0f);
}

TEST(Dequantize, Q8_0Block) {
  uint8_t block[34];
  const uint16_t d = 0x3400;  // 0.25
  std::memcpy(block, &d, 2);
  for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  float y[32];
  DequantizeRow(DType::kQ8_0, block, 32, y);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j - 16) * 0.25f);
}

TEST(Dequantize, Q6_KConstantBlock) {
  // All 6-bit values 32 (= zero after the -32 offset) except through the scales.
  uint8_t block[210] = {};
  for (int i = 0; i < 128; ++i) block[i] = 0x00;
  for (int i = 0; i < 64; ++i) block[128 + i] = 0xAA;  // high bits 2 in every field -> q = 32
  for (int i = 0; i < 16; ++i) block[192 + i] = static_cast<uint8_t>(i + 1);
  const uint16_t d = 0x3C00;
  std::memcpy(block + 208, &d, 2);
  float y[256];
  DequantizeRow(DType::kQ6_K, block, 256, y);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  block[0] = 0x01;  // element 0: q = 33 -> 1 * scale[0] * d
  DequantizeRow(DType::kQ6_K, block, 256, y);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[64], 0.0f);
}

TEST(StorageBytes, RejectsPartialBlocks) {
  EXPECT_EQ(*StorageBytes(DType::kQ4_K, 512), 288u);
  EXPECT_FALSE(StorageBytes(DType::kQ4_K, 100).ok());
  EXPECT_EQ(*StorageBytes(DType::kBF16, 3), 6u);
  EXPECT_FALSE(DTypeFromGgml(16).ok());  // IQ2_XXS is not supported and must say so
  EXPECT_EQ(*DTypeFromGgml(3), DType::kQ4_1);
}

// Random bytes for every block type (scales included, so f16 subnormals, infinities and NaNs
// occur): DequantizeRow, whichever kernel serves it, equals the scalar loops bit for bit, and
// DequantizeRowToBFloat16 equals FloatToBFloat16 of that. Odd lengths exercise the tails.
class DequantizeBothPaths : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override { internal::SetIsaCeilingForTests(GetParam()); }
  void TearDown() override { internal::SetIsaCeilingForTests(Isa::kAmx); }
};
// At the AVX2 ceiling and at the CPU's own (AVX512-BF16 kernels where it has them).
INSTANTIATE_TEST_SUITE_P(Avx2AndAvx512Bf16, DequantizeBothPaths,
                         ::testing::Values(Isa::kAvx2, Isa::kAvx512Bf16));

TEST_P(DequantizeBothPaths, FastPathsEqualScalarReferenceBitForBit) {
  std::mt19937 rng(7);
  for (int type_index = 0; type_index < kDTypeCount; ++type_index) {
    const DType type = static_cast<DType>(type_index);
    const DTypeTraits& t = Traits(type);
    for (int64_t blocks : {1, 3, 37}) {
      const int64_t n = blocks * t.block_elements + (t.block_elements == 1 ? 5 : 0);
      std::vector<uint8_t> src(*StorageBytes(type, n));
      for (uint8_t& byte : src) byte = static_cast<uint8_t>(rng());
      std::vector<float> want(n), got(n);
      internal::DequantizeRowScalar(type, src.data(), n, want.data());
      DequantizeRow(type, src.data(), n, got.data());
      EXPECT_EQ(std::memcmp(want.data(), got.data(), n * sizeof(float)), 0) << t.name << " " << n;
      std::vector<uint16_t> bf16(n);
      DequantizeRowToBFloat16(type, src.data(), n, bf16.data());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(bf16[i], FloatToBFloat16(want[i])) << t.name << " element " << i;
      }
      // The same values held as floats, the operand of bf16 arithmetic on f32 FMA units.
      std::vector<float> values(n);
      DequantizeRowToBFloat16Values(type, src.data(), n, values.data());
      for (int64_t i = 0; i < n; ++i) {
        const float expected = BFloat16ToFloat(bf16[i]);
        ASSERT_EQ(std::memcmp(&values[i], &expected, 4), 0) << t.name << " element " << i;
      }
    }
  }
}

// The block codes (the AMX kernel's form in f32 precision) rebuild every dequantized value:
// fma(scale, code, offset) equals the scalar loops' result (zeros of either sign alike, NaNs
// alike), the codes being integers in bf16. Random bytes, so odd scales occur here too.
TEST_P(DequantizeBothPaths, BlockCodesRebuildEveryValue) {
  std::mt19937 rng(9);
  for (int type_index = 0; type_index < kDTypeCount; ++type_index) {
    const DType type = static_cast<DType>(type_index);
    if (!HasBlockCodes(type)) continue;
    const DTypeTraits& t = Traits(type);
    for (int64_t blocks : {1, 5}) {
      const int64_t n = blocks * t.block_elements, groups = n / 32, stride = 3;
      std::vector<uint8_t> src(*StorageBytes(type, n));
      for (uint8_t& byte : src) byte = static_cast<uint8_t>(rng());
      std::vector<float> want(n);
      internal::DequantizeRowScalar(type, src.data(), n, want.data());
      std::vector<uint16_t> codes(n);
      std::vector<float> scale(groups * stride, -1.f), offset(groups * stride, -1.f);
      DecodeRowToBlockCodes(type, src.data(), n, codes.data(), scale.data(), offset.data(), stride);
      for (int64_t i = 0; i < n; ++i) {
        const float code = BFloat16ToFloat(codes[i]);
        ASSERT_EQ(code, std::nearbyint(code)) << t.name << " element " << i;
        ASSERT_LE(std::fabs(code), 128.f) << t.name << " element " << i;
        const float got = std::fma(scale[i / 32 * stride], code, offset[i / 32 * stride]);
        ASSERT_TRUE(got == want[i] || (std::isnan(got) && std::isnan(want[i])))
            << t.name << " element " << i << ": " << got << " vs " << want[i];
      }
      if (!BlockCodesHaveOffsets(type)) {
        for (int64_t g = 0; g < groups; ++g) ASSERT_EQ(offset[g * stride], 0.f) << t.name;
      }
    }
  }
}

TEST_P(DequantizeBothPaths, FloatsToBFloat16EqualsScalarOnSpecialValues) {
  std::vector<float> x = {0.f,     -0.f,     1.f,      -1.5f,     1.f + std::ldexp(1.f, -8),
                          3.4e38f, -3.4e38f, INFINITY, -INFINITY, NAN,
                          1e-40f,  -1e-45f,  65504.f};
  uint32_t signaling_nan = 0x7F800001u;
  float f;
  std::memcpy(&f, &signaling_nan, 4);
  x.push_back(f);
  std::vector<uint16_t> got(x.size());
  FloatsToBFloat16(x.data(), x.size(), got.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], FloatToBFloat16(x[i])) << i;
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(got[x.size() - 1])));  // never rounded to inf
  EXPECT_EQ(got[10], 0x0000);                                   // subnormals flush to signed zero
  EXPECT_EQ(got[11], 0x8000);
  // Long enough for every vector width and its tail.
  std::vector<float> ramp(77);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = std::ldexp(1.f + i / 97.f, int(i % 50) - 25);
  std::vector<uint16_t> out(ramp.size());
  FloatsToBFloat16(ramp.data(), ramp.size(), out.data());
  for (size_t i = 0; i < ramp.size(); ++i) EXPECT_EQ(out[i], FloatToBFloat16(ramp[i])) << i;
}

}  // namespace
}  // namespace superweight::dequantize_test
