#include "server/convert.h"

#include <string>

#include "gtest/gtest.h"

namespace superweight::server {
namespace {

const Model& TinyStories() {
  static const Model* model = [] {
    auto m = OpenModel(std::string(SUPERWEIGHT_TESTDATA) + "/hf_tinystories_656k");
    EXPECT_TRUE(m.ok()) << m.status();
    return m->release();
  }();
  return *model;
}

TEST(TokensFromInput, TextIsTokenizedWithTheModelsBos) {
  v1::Input input;
  input.set_text("Once upon a time");
  auto ids = TokensFromInput(input, TinyStories(), 2048, "");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_GT(ids->size(), 1u);
  EXPECT_EQ((*ids)[0], TinyStories().tokenizer->bos_id());
}

TEST(TokensFromInput, TextThatIsNotUtf8IsRefusedWithItsOffset) {
  v1::Input input;
  input.set_text("Once upon \xff time");
  auto ids = TokensFromInput(input, TinyStories(), 2048, "");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("byte 0xFF at offset 10"), std::string::npos)
      << ids.status();
  // The fallback text (Locate's default prompt, a confirmation text) is checked the same way.
  auto fallback = TokensFromInput(v1::Input(), TinyStories(), 2048, "\xc3(");
  EXPECT_EQ(fallback.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace superweight::server
