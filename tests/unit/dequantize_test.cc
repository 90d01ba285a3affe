#include "engine/formats/dequantize.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace superweight {
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
  EXPECT_FALSE(DTypeFromGgml(10).ok());  // Q2_K is not supported and must say so
  EXPECT_EQ(*DTypeFromGgml(3), DType::kQ4_1);
}

}  // namespace
}  // namespace superweight
