#include "engine/formats/safetensors.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace superweight::safetensors_test {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> Build(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  const uint64_t len = header.size();
  std::memcpy(out.data(), &len, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

TEST(Safetensors, ParsesTensorsAndMetadata) {
  auto bytes = Build(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},)"
      R"("ids":{"dtype":"I64","shape":[1],"data_offsets":[32,40]}})",
      40);
  auto f = ParseSafetensors(bytes, "t.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata.at("format"), "pt");
  ASSERT_EQ(f->tensors.size(), 2u);  // the integer tensor is validated, then left out
  EXPECT_EQ(f->tensors.at("a").dtype, DType::kF32);
  EXPECT_THAT(f->tensors.at("a").shape, ::testing::ElementsAre(2, 3));
  const size_t header_size = bytes.size() - 8 - 40;
  EXPECT_EQ(f->tensors.at("b").data, bytes.data() + 8 + header_size + 24);
}

struct BadCase {
  std::string header;
  size_t data;
  std::string expect;
};

TEST(Safetensors, RefusesMalformedFilesWithTheirName) {
  const BadCase cases[] = {
      {"{not json", 0, "not a JSON object"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8, "out of range"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "do not hold"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "out of range"},
      {R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8, "unknown dtype"},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-integer"},
      {R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, "needs dtype"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
       "overflows"},
      // Element counts whose byte count wraps around 64 bits (2^62 * 4 = 2^64 -> 0 bytes,
      // (2^61 + 1) * 8 -> 8 bytes) once passed as matching their data.
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0,
       "do not hold"},
      {R"({"a":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})", 0,
       "do not hold"},
      {R"({"a":{"dtype":"I64","shape":[2305843009213693953],"data_offsets":[0,8]}})", 8,
       "do not hold"},
  };
  for (const auto& c : cases) {
    auto bytes = Build(c.header, c.data);
    auto f = ParseSafetensors(bytes, "bad.safetensors");
    ASSERT_FALSE(f.ok()) << c.header;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(f.status().message()), HasSubstr("bad.safetensors"));
    EXPECT_THAT(std::string(f.status().message()), HasSubstr(c.expect)) << c.header;
  }
}

TEST(Safetensors, HeaderLengthPastTheEnd) {
  std::vector<uint8_t> bytes(16, 0);
  const uint64_t len = 1000;
  std::memcpy(bytes.data(), &len, 8);
  auto f = ParseSafetensors(bytes, "x");
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("runs past the end"));
  EXPECT_FALSE(ParseSafetensors({bytes.data(), 5}, "x").ok());
}

TEST(Safetensors, EveryTruncationIsAnError) {
  auto bytes = Build(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})", 24);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(ParseSafetensors({bytes.data(), n}, "x").ok()) << n;
  }
}

}  // namespace
}  // namespace superweight::safetensors_test
