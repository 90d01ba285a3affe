#include "engine/tokenizer/tokenizer.h"

#include "engine/tokenizer/pretokenize.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight {
namespace {

using ::testing::ElementsAre;

TEST(SplitGpt2, FollowsThePattern) {
  EXPECT_THAT(SplitGpt2("Hello world  x"), ElementsAre("Hello", " world", " ", " x"));
  EXPECT_THAT(SplitGpt2("don't we'll"), ElementsAre("don", "'t", " we", "'ll"));
  EXPECT_THAT(SplitGpt2("a\n\nb"), ElementsAre("a", "\n", "\n", "b"));
  EXPECT_THAT(SplitGpt2("x 123 !? "), ElementsAre("x", " 123", " !?", " "));
  EXPECT_THAT(SplitGpt2("café Ωμέγα ٣٤"), ElementsAre("café", " Ωμέγα", " ٣٤"));
  EXPECT_THAT(SplitGpt2("  "), ElementsAre("  "));
}

TokenizerSpec TinySpm() {
  // Pieces: bytes for fallback, then characters and merges scored like SentencePiece.
  TokenizerSpec s;
  s.pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    s.pieces.push_back(buf);
  }
  for (const char* p : {"\xE2\x96\x81", "a", "b", "ab",
                        "\xE2\x96\x81"
                        "ab"})
    s.pieces.push_back(p);
  s.scores.assign(s.pieces.size(), 0.f);
  s.scores[s.pieces.size() - 2] = -1.f;  // "ab"
  s.scores[s.pieces.size() - 1] = -2.f;  // "▁ab"
  s.byte_fallback = true;
  s.spaces_to_marker = true;
  s.prepend_space_marker = true;
  s.unk_id = 0;
  s.bos_id = 1;
  return s;
}

TEST(Tokenizer, SentencePieceScoresAndByteFallback) {
  auto t = Tokenizer::Create(TinySpm());
  ASSERT_TRUE(t.ok()) << t.status();
  const int marker = 259, a = 260, b = 261, ab = 262, mab = 263;
  EXPECT_THAT((*t)->Encode("ab", true), ElementsAre(1, mab));
  EXPECT_THAT((*t)->Encode("ab ba", false), ElementsAre(mab, marker, b, a));
  // "é" is not a piece: its two UTF-8 bytes fall back to <0xC3> <0xA9>.
  EXPECT_THAT((*t)->Encode("é", false), ElementsAre(marker, 3 + 0xC3, 3 + 0xA9));
  EXPECT_EQ((*t)->Decode((*t)->Encode("ab é", false)), " ab é");
  (void)ab;
}

TEST(Tokenizer, RefusesInconsistentSpecs) {
  TokenizerSpec s = TinySpm();
  s.scores.pop_back();
  EXPECT_FALSE(Tokenizer::Create(s).ok());
  s = TinySpm();
  s.added_tokens.push_back({"<x>", 100000});
  EXPECT_FALSE(Tokenizer::Create(s).ok());
}

TEST(Tokenizer, Llama2cTokenizerMatchesItsTrainingText) {
  auto t = LoadLlama2cTokenizer(testing::TestData("stories260K/tok512.bin"), 512);
  ASSERT_TRUE(t.ok()) << t.status();
  // The ids the reference llama2.c run produced for this text (testdata/SOURCES.md).
  EXPECT_THAT((*t)->Encode("Once upon a time", true), ElementsAre(1, 403, 407, 261, 378));
  EXPECT_EQ((*t)->Decode({403, 407, 261, 378}), " Once upon a time");
}

TEST(Tokenizer, Llama2cRefusesTruncatedFile) {
  auto bytes = testing::ReadAll(testing::TestData("stories260K/tok512.bin"));
  const std::string dir = testing::ScratchDir("tok");
  testing::WriteAll(dir + "/tok.bin", bytes.data(), bytes.size() / 2);
  auto t = LoadLlama2cTokenizer(dir + "/tok.bin", 512);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("tok.bin"));
}

TEST(Tokenizer, HfNormalizedAddedTokensMatchTheirNormalizedForm) {
  auto t = LoadHfTokenizer(testing::TestData("hf_tinystories_656k/tokenizer.json"), 1, 2);
  ASSERT_TRUE(t.ok()) << t.status();
  // Ids from the `tokenizers` library for the same strings.
  EXPECT_THAT((*t)->Encode("😀 hello <unk> x", true),
              ElementsAre(1, 80, 0, 80, 109, 113, 67, 0, 80, 76));
  EXPECT_THAT((*t)->Encode("a <|end_story|> b", true), ElementsAre(1, 85, 2, 80, 54));
}

TEST(Tokenizer, HfRefusesWhatItCannotHonour) {
  const std::string dir = testing::ScratchDir("hftok");
  const std::string json =
      R"({"model":{"type":"WordPiece","vocab":{"a":0}},"normalizer":null,"pre_tokenizer":null})";
  testing::WriteAll(dir + "/tokenizer.json", json.data(), json.size());
  auto t = LoadHfTokenizer(dir + "/tokenizer.json", -1, -1);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  const std::string bad = R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},)"
                          R"("normalizer":{"type":"NFKC"},"pre_tokenizer":null})";
  testing::WriteAll(dir + "/tokenizer.json", bad.data(), bad.size());
  EXPECT_FALSE(LoadHfTokenizer(dir + "/tokenizer.json", -1, -1).ok());
  testing::WriteAll(dir + "/tokenizer.json", "{", 1);
  EXPECT_EQ(LoadHfTokenizer(dir + "/tokenizer.json", -1, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace superweight
