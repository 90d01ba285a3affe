#include "engine/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "engine/formats/gguf.h"
#include "engine/model/model.h"
#include "engine/tokenizer/normalize.h"
#include "engine/tokenizer/pretokenize.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::tokenizer_test {
namespace {

using ::testing::ElementsAre;

std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

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
  std::vector<std::unique_ptr<Normalizer>> steps;
  steps.push_back(MakePrepend("\xE2\x96\x81"));
  steps.push_back(*MakeReplace(" ", /*is_regex=*/false, "\xE2\x96\x81"));
  s.normalizer = MakeNormalizerSequence(std::move(steps));
  std::vector<std::unique_ptr<Decoder>> decoders;
  decoders.push_back(*MakeReplaceDecoder("\xE2\x96\x81", /*is_regex=*/false, " "));
  decoders.push_back(MakeByteFallbackDecoder());
  s.decoder = MakeDecoderSequence(std::move(decoders));
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
  AddedToken bad;
  bad.content = "<x>";
  bad.id = 100000;
  s.added_tokens.push_back(bad);
  EXPECT_FALSE(Tokenizer::Create(s).ok());
}

TEST(Tokenizer, Llama2cTokenizerMatchesItsTrainingText) {
  auto t = LoadLlama2cTokenizer(testing::TestData("stories260K/tok512.bin"), 512);
  ASSERT_TRUE(t.ok()) << t.status();
  // The ids the reference llama2.c run produced for this text (testdata/SOURCES.md).
  EXPECT_THAT((*t)->Encode("Once upon a time", true), ElementsAre(1, 403, 407, 261, 378));
  // SentencePiece decoding drops the space the encoder put before the text.
  EXPECT_EQ((*t)->Decode({403, 407, 261, 378}), "Once upon a time");
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
  EXPECT_THAT((*t)->Encode("😀 hello <unk> x", true, /*parse_special=*/true),
              ElementsAre(1, 80, 0, 80, 109, 113, 67, 0, 80, 76));
  EXPECT_THAT((*t)->Encode("a <|end_story|> b", true, /*parse_special=*/true),
              ElementsAre(1, 85, 2, 80, 54));
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
  // Unknown components are refused by name.
  for (const char* part :
       {R"("normalizer":{"type":"Precompiled","precompiled_charsmap":""})",
        R"("pre_tokenizer":{"type":"UnicodeScripts"})", R"("decoder":{"type":"WordPiece"})",
        R"("pre_tokenizer":{"type":"Split","pattern":{"Regex":"x"},)"
        R"("behavior":"Sideways","invert":false})"}) {
    const std::string json =
        std::string(R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},)") +
        R"("merges":["a b"]},)" + part + "}";
    testing::WriteAll(dir + "/tokenizer.json", json.data(), json.size());
    auto t = LoadHfTokenizer(dir + "/tokenizer.json", -1, -1);
    ASSERT_FALSE(t.ok()) << part;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented) << t.status();
  }
  testing::WriteAll(dir + "/tokenizer.json", "{", 1);
  EXPECT_EQ(LoadHfTokenizer(dir + "/tokenizer.json", -1, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

std::vector<std::string> SplitWith(const PreTokenizer& pre, std::string_view text) {
  std::vector<Piece> pieces = {{std::string(text), true}};
  pre.Apply(&pieces);
  std::vector<std::string> words;
  for (const Piece& p : pieces) words.push_back(p.text);
  return words;
}

TEST(SplitGpt2, EqualsTheRegexOnIcu) {
  // The same pattern in a group, so that it is not recognized and runs on ICU.
  auto regex =
      MakeRegexSplit(std::string("(?:") + kGpt2Pattern + ")", SplitBehavior::kIsolated, false);
  ASSERT_TRUE(regex.ok()) << regex.status();
  std::string text = ReadText(testing::TestData("text/wiki.test.raw")).substr(0, 200000);
  for (const char* extra :
       {"  x\t\t\ny", "don't 'S 'll'LL", "\u00bd\u0661\u0662 \u00a0a\u3000b\u2028", "!!?? 12ab",
        "\xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87", "a \x0b b\xc2\x85", "   "}) {
    text += extra;
  }
  for (absl::string_view piece : absl::StrSplit(text, '\n')) {
    const std::string line(piece);
    std::vector<std::string> fast;
    for (std::string_view w : SplitGpt2(line)) fast.emplace_back(w);
    ASSERT_EQ(fast, SplitWith(**regex, line)) << line;
  }
}

TEST(PreTokenizer, SplitBehaviorsAsTokenizers) {
  // Expected words from `tokenizers` 0.20 on the same pattern and text.
  const std::string text = "a, b,, c";
  auto split = [&](SplitBehavior b, bool invert) {
    auto p = MakeRegexSplit(R"(,\s?)", b, invert);
    EXPECT_TRUE(p.ok());
    return SplitWith(**p, text);
  };
  using B = SplitBehavior;
  EXPECT_THAT(split(B::kRemoved, false), ElementsAre("a", "b", "c"));
  EXPECT_THAT(split(B::kRemoved, true), ElementsAre(", ", ",", ", "));
  EXPECT_THAT(split(B::kIsolated, false), ElementsAre("a", ", ", "b", ",", ", ", "c"));
  EXPECT_THAT(split(B::kMergedWithPrevious, false), ElementsAre("a, ", "b,", ", ", "c"));
  EXPECT_THAT(split(B::kMergedWithPrevious, true), ElementsAre("a", ", b", ",", ", c"));
  EXPECT_THAT(split(B::kMergedWithNext, false), ElementsAre("a", ", b", ",", ", c"));
  EXPECT_THAT(split(B::kMergedWithNext, true), ElementsAre("a, ", "b,", ", ", "c"));
  EXPECT_THAT(split(B::kContiguous, false), ElementsAre("a", ", ", "b", ",, ", "c"));
  // Oniguruma's \s (White_Space: U+000B and U+0085 too) and $ (at each \n).
  auto spaces = MakeRegexSplit(R"(\s)", B::kRemoved, false);
  ASSERT_TRUE(spaces.ok());
  EXPECT_THAT(SplitWith(**spaces,
                        "a\x0b"
                        "b\xc2\x85"
                        "c"),
              ElementsAre("a", "b", "c"));
  auto line_end = MakeRegexSplit(R"( +$)", B::kIsolated, false);
  ASSERT_TRUE(line_end.ok());
  EXPECT_THAT(SplitWith(**line_end, "a  \nb  "), ElementsAre("a", "  ", "\nb", "  "));
  EXPECT_FALSE(MakeRegexSplit("[a-", B::kIsolated, false).ok());
}

TEST(PreTokenizer, EveryGgufPreTokenizerCompiles) {
  EXPECT_EQ(KnownGgufPreTokenizers().size(), 42u);  // every name llama.cpp knows for BPE
  for (const std::string& pre : KnownGgufPreTokenizers()) {
    auto p = MakeGgufPreTokenizer(pre);
    ASSERT_TRUE(p.ok()) << pre << ": " << p.status();
    // Each runs on text of every script class without trouble.
    EXPECT_FALSE(
        SplitWith(**p, "Hello, y'all! 3333 \u00bd \u6211\u60f3 \xF0\x9F\x98\x81\n\n x").empty());
  }
  auto unknown = MakeGgufPreTokenizer("not-a-model");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), ::testing::HasSubstr("not-a-model"));
}

TEST(Normalizer, UnicodeFormsCaseStripReplace) {
  std::vector<std::unique_ptr<Normalizer>> steps;
  steps.push_back(*MakeUnicodeNormalizer("NFKC"));
  steps.push_back(MakeLowercase());
  steps.push_back(MakeStrip(true, true));
  steps.push_back(*MakeReplace(R"(\s+)", /*is_regex=*/true, " "));
  // `tokenizers` gives "abc σ fi x" for the same sequence.
  EXPECT_EQ(
      MakeNormalizerSequence(std::move(steps))->Apply("  \uFF21\uFF22\uFF23  \u03A3 \uFB01\t\tx  "),
      "abc \u03C3 fi x");
  EXPECT_EQ(MakeLowercase()->Apply("\u03A3\u0391\u03A3 \u0130"), "\u03C3\u03B1\u03C3 i\u0307");
  EXPECT_EQ((*MakeUnicodeNormalizer("NFC"))->Apply("e\xCC\x81"), "\u00e9");
  EXPECT_EQ((*MakeUnicodeNormalizer("NFD"))->Apply("\u00e9"), "e\xCC\x81");
  EXPECT_FALSE(MakeUnicodeNormalizer("NFX").ok());
  EXPECT_EQ(MakePrepend("_")->Apply(""), "");
}

TEST(Decoder, AsTokenizers) {
  auto decode = [](const Decoder& d, std::vector<std::string> tokens) {
    d.Apply(&tokens);
    std::string s;
    for (const std::string& t : tokens) s += t;
    return s;
  };
  const std::string m = "\xE2\x96\x81";
  // Expected strings from `tokenizers` 0.20.
  EXPECT_EQ(decode(*MakeMetaspaceDecoder(m, false), {m + m + "a" + m, m + "b"}), "a b");
  EXPECT_EQ(decode(*MakeMetaspaceDecoder(m, true), {m + m + "a" + m, m + "b"}), "  a  b");
  std::vector<std::unique_ptr<Decoder>> steps;
  steps.push_back(MakeByteFallbackDecoder());
  steps.push_back(MakeFuseDecoder());
  EXPECT_EQ(decode(*MakeDecoderSequence(std::move(steps)),
                   {"<0xE4>", "<0xB8>", "a", "<0xE4>", "<0xB8>", "<0xAD>"}),
            "\uFFFD\uFFFDa\u4E2D");
  EXPECT_EQ(decode(*MakeByteLevelDecoder(), {"\u0120a", "<x y>", "\u00e4"}), " a<x y>\uFFFD");
  EXPECT_EQ(decode(*MakeStripDecoder(" ", 1, 1), {"  a  ", "b"}), " a b");
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F\x98"
                      "b\xC0\x80\xED\xA0\x80"),
            "a\uFFFD"
            "b\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD");
}

// llama.cpp's tokenizer tests (testdata/vocab, from its models/ directory): every string of
// each .inp gives the ids on the same line of the .out, with no BOS and no special tokens
// parsed, as tests/test-tokenizer-0.cpp runs them; and decodes back to itself.
class LlamaCppVocab : public ::testing::TestWithParam<const char*> {};

TEST_P(LlamaCppVocab, IdsEqualLlamaCpp) {
  const std::string base =
      testing::TestData(std::string("vocab/ggml-vocab-") + GetParam() + ".gguf");
  auto tok = LoadGgufTokenizerFile(base);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string inputs = ReadText(base + ".inp");
  const std::string outputs = ReadText(base + ".out");
  std::vector<std::string> cases = absl::StrSplit(inputs, "\n__ggml_vocab_test__\n");
  ASSERT_EQ(cases.back(), "");  // the file ends with a separator
  cases.pop_back();
  std::vector<std::string> lines = absl::StrSplit(outputs, '\n');
  ASSERT_GE(lines.size(), cases.size());
  ASSERT_EQ(cases.size(), 46u);
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<int32_t> want;
    for (absl::string_view id : absl::StrSplit(lines[i], ' ', absl::SkipEmpty())) {
      want.push_back(std::stoi(std::string(id)));
    }
    auto got = (*tok)->Tokenize(cases[i], EncodeOptions{});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << "case " << i << ": '" << cases[i] << "'";
    EXPECT_EQ((*tok)->Decode(*got), cases[i]) << "case " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, LlamaCppVocab,
                         ::testing::Values("llama-spm", "phi-3", "gpt-2", "falcon",
                                           "deepseek-llm"));

TEST(Tokenizer, SpecialTokensInUserTextAreTextUnlessAsked) {
  auto tok = LoadGgufTokenizerFile(testing::TestData("vocab/ggml-vocab-gpt-2.gguf"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EncodeOptions options;
  auto plain = (*tok)->Tokenize("a<|endoftext|>", options);
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(*plain, ::testing::Not(::testing::Contains(50256)));
  options.parse_special = true;
  EXPECT_THAT(*(*tok)->Tokenize("a<|endoftext|>", options), ElementsAre(64, 50256));
  options.add_eos = true;
  EXPECT_EQ((*tok)->Tokenize("a", options)->back(), (*tok)->eos_id());
}

TEST(Tokenizer, RefusesInvalidUtf8) {
  auto tok = LoadGgufTokenizerFile(testing::TestData("vocab/ggml-vocab-gpt-2.gguf"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (const char* bad : {"ab\xC3", "\xFF", "a\xED\xA0\x80", "\xC0\xAF", "x\xF0\x9F\x98 y"}) {
    auto ids = (*tok)->Tokenize(bad, EncodeOptions{});
    ASSERT_FALSE(ids.ok()) << bad;
    EXPECT_THAT(std::string(ids.status().message()), ::testing::HasSubstr("not valid UTF-8"));
  }
  // The unchecked entry point stays total: bytes in, ids out.
  EXPECT_FALSE((*tok)->Encode("ab\xC3", false).empty());
}

TEST(Tokenizer, VocabularyOnlyGgufIsNoModel) {
  auto model = OpenModel(testing::TestData("vocab/ggml-vocab-falcon.gguf"));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("holds no tensors"), std::string::npos) << model.status();
  // It parses as llama.cpp wrote it, with no padding after the header (a file with tensors
  // needs its data section: Gguf.EveryTruncationIsAnErrorNotACrash).
  auto bytes = testing::ReadAll(testing::TestData("vocab/ggml-vocab-falcon.gguf"));
  auto vocabulary = ParseGguf(absl::MakeConstSpan(bytes), "falcon");
  ASSERT_TRUE(vocabulary.ok()) << vocabulary.status();
  EXPECT_TRUE(vocabulary->tensors.empty());
}

TEST(Tokenizer, GgufRefusesAnUnknownPreTokenizerByName) {
  // The falcon vocabulary with its pre-tokenizer renamed: refused, naming the value.
  auto bytes = testing::ReadAll(testing::TestData("vocab/ggml-vocab-falcon.gguf"));
  std::string data(bytes.begin(), bytes.end());
  const size_t at = data.find("falcon", data.find("tokenizer.ggml.pre"));
  ASSERT_NE(at, std::string::npos);
  data.replace(at, 6, "fa1con");
  const std::string dir = testing::ScratchDir("gguf_pre");
  testing::WriteAll(dir + "/v.gguf", data.data(), data.size());
  auto tok = LoadGgufTokenizerFile(dir + "/v.gguf");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(tok.status().message()), ::testing::HasSubstr("'fa1con'"));
}

TEST(Normalizer, MaxShrinkBoundsWhatTextBecomes) {
  auto nfkc = MakeUnicodeNormalizer("NFKC");
  ASSERT_TRUE(nfkc.ok());
  // A 4-byte mathematical bold A becomes one byte: the bound holds and is reached.
  EXPECT_EQ((*nfkc)->Apply("\xF0\x9D\x90\x80"), "A");
  EXPECT_EQ((*nfkc)->MaxShrink(), 4);
  EXPECT_EQ(MakeLowercase()->Apply("\xE2\x84\xAA"), "k");  // the Kelvin sign
  EXPECT_GE(MakeLowercase()->MaxShrink(), 3);
  EXPECT_EQ(MakeStrip(true, true)->MaxShrink(), 0);  // removes text: no bound
  EXPECT_EQ(MakeStripAccents()->MaxShrink(), 0);
  EXPECT_EQ(MakePrepend("\xE2\x96\x81")->MaxShrink(), 1);
  auto to_space = MakeReplace("  ", false, " ");
  ASSERT_TRUE(to_space.ok());
  EXPECT_EQ((*to_space)->MaxShrink(), 2);
  std::vector<std::unique_ptr<Normalizer>> steps;
  steps.push_back(MakePrepend("x"));
  steps.push_back(std::move(*to_space));
  steps.push_back(std::move(*nfkc));
  EXPECT_EQ(MakeNormalizerSequence(std::move(steps))->MaxShrink(), 8);
}

TEST(Tokenizer, MaxTokensRefusesTextOverTheLimitHoweverLong) {
  auto tok = LoadGgufTokenizerFile(testing::TestData("vocab/ggml-vocab-gpt-2.gguf"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ifstream f(testing::TestData("text/wiki.test.raw"), std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string wiki = ss.str().substr(0, 200000);
  EncodeOptions options;
  auto all = (*tok)->Tokenize(wiki, options);
  ASSERT_TRUE(all.ok());
  const size_t n = all->size();
  // A lower bound from the size alone, never above the real count.
  EXPECT_GT((*tok)->MinTokens(wiki.size()), 0u);
  EXPECT_LE((*tok)->MinTokens(wiki.size()), n);
  options.max_tokens = n;  // exactly at the limit: the same ids
  EXPECT_EQ(*(*tok)->Tokenize(wiki, options), *all);
  options.max_tokens = n - 1;
  auto over = (*tok)->Tokenize(wiki, options);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  // Text many times over the limit (8 MB for 1,000 tokens) is refused by the chunked count.
  std::string huge;
  while (huge.size() < (size_t{8} << 20)) huge += wiki;
  options.max_tokens = 1000;
  auto far = (*tok)->Tokenize(huge, options);
  EXPECT_EQ(far.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(far.status().message().find("over the limit of 1000 tokens"), std::string::npos)
      << far.status();
}

}  // namespace
}  // namespace superweight::tokenizer_test
