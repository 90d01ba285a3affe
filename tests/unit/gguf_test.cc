#include "engine/formats/gguf.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/gguf_writer.h"
#include "tests/unit/test_util.h"

namespace superweight::gguf_test {
namespace {

using testing::GgufWriter;
using ::testing::HasSubstr;

std::vector<uint8_t> SmallFile() {
  GgufWriter w;
  w.KvString("general.architecture", "llama");
  w.KvU32("llama.block_count", 2);
  w.KvF32("llama.rope.freq_base", 10000.f);
  w.KvStringArray("tokenizer.ggml.tokens", {"a", "b", "ab"});
  std::vector<uint8_t> f32(4 * 64, 0);
  float one = 1.f;
  std::memcpy(f32.data(), &one, 4);
  w.Tensor("t.f32", {64}, 0, f32);
  w.Tensor("t.q8", {32, 2}, 8, std::vector<uint8_t>(68, 0));
  return w.Bytes();
}

TEST(Gguf, ParsesMetadataAndTensors) {
  auto bytes = SmallFile();
  auto f = ParseGguf(bytes, "small.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version, 3u);
  EXPECT_EQ(f->GetString("general.architecture"), "llama");
  EXPECT_EQ(f->GetInt("llama.block_count"), 2);
  EXPECT_EQ(f->GetFloat("llama.rope.freq_base"), 10000.0);
  EXPECT_THAT(f->Find("tokenizer.ggml.tokens")->strings, ::testing::ElementsAre("a", "b", "ab"));
  ASSERT_EQ(f->tensors.size(), 2u);
  const GgufTensor& t = f->tensors.at("t.f32");
  EXPECT_EQ(t.dtype, DType::kF32);
  EXPECT_EQ(t.nbytes, 256u);
  float v;
  std::memcpy(&v, t.data, 4);
  EXPECT_EQ(v, 1.f);
  EXPECT_EQ((t.data - bytes.data()) % 32, 0);
  EXPECT_THAT(f->tensors.at("t.q8").ne, ::testing::ElementsAre(32, 2));
  EXPECT_EQ(f->tensors.at("t.q8").nbytes, 68u);
}

TEST(Gguf, EveryTruncationIsAnErrorNotACrash) {
  auto bytes = SmallFile();
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto f = ParseGguf({bytes.data(), n}, "cut.gguf");
    ASSERT_FALSE(f.ok()) << n;
    EXPECT_THAT(std::string(f.status().message()), HasSubstr("cut.gguf"));
  }
}

TEST(Gguf, RefusesBadMagicVersionAndTypes) {
  auto bytes = SmallFile();
  auto bad = bytes;
  bad[0] = 'X';
  EXPECT_THAT(std::string(ParseGguf(bad, "m").status().message()), HasSubstr("bad magic"));
  bad = bytes;
  bad[4] = 9;
  EXPECT_THAT(std::string(ParseGguf(bad, "m").status().message()), HasSubstr("version"));

  GgufWriter w;
  w.Tensor("t", {256}, 16, std::vector<uint8_t>(66, 0));  // IQ2_XXS
  auto f = ParseGguf(w.Bytes(), "iq2xxs.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("tensor 't'"));
}

TEST(Gguf, RefusesTensorsOutsideTheFile) {
  GgufWriter w;
  w.Tensor("big", {64, 64}, 0, std::vector<uint8_t>(16, 0));  // claims 16 KiB, holds 16 B
  auto f = ParseGguf(w.Bytes(), "short.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("out of range"));

  GgufWriter q;
  q.Tensor("odd", {40}, 8, std::vector<uint8_t>(68, 0));  // 40 is not whole Q8_0 blocks
  EXPECT_THAT(std::string(ParseGguf(q.Bytes(), "odd.gguf").status().message()),
              HasSubstr("not whole"));
}

TEST(Gguf, HugeUnsignedValuesSaturate) {
  // Found by tests/fuzz/gguf_fuzzer: a uint64 past INT64_MAX once went through an undefined
  // double-to-int64 conversion.
  GgufWriter w;
  w.KvU64("x.count", UINT64_MAX);
  auto f = ParseGguf(w.Bytes(), "big.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->GetInt("x.count"), INT64_MAX);
}

TEST(Gguf, HostileCountsDoNotAllocate) {
  GgufWriter w;
  auto bytes = w.Bytes();
  const uint64_t huge = uint64_t{1} << 60;
  std::memcpy(bytes.data() + 16, &huge, 8);  // kv count
  EXPECT_FALSE(ParseGguf(bytes, "h").ok());
}

TEST(Gguf, ParsesTheRealSmolLm2Header) {
  const std::string path = testing::TestData("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
  auto bytes = testing::ReadAll(path);
  ASSERT_FALSE(bytes.empty()) << "run make setup to install the default model";
  auto f = ParseGguf(bytes, path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors.size(), 272u);
  EXPECT_EQ(f->tensors.at("blk.0.ffn_down.weight").dtype, DType::kQ4_1);
  EXPECT_THAT(f->tensors.at("blk.0.ffn_down.weight").ne, ::testing::ElementsAre(1536, 576));
  EXPECT_EQ(f->tensors.at("token_embd.weight").dtype, DType::kQ8_0);
}

}  // namespace
}  // namespace superweight::gguf_test
