// Publishing without replacing, staging names and their sweep; echoed text cut on characters.
#include "engine/util/publish.h"

#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/formats/gguf_writer.h"
#include "engine/util/utf8_prefix.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::publish_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(Publish, NeverReplacesAFileOrADirectory) {
  const std::string dir = testing::ScratchDir("publish_noreplace");
  testing::WriteAll(dir + "/kept", "old", 3);
  testing::WriteAll(dir + "/new", "new", 3);
  absl::Status s = RenameWithoutReplacing(dir + "/new", dir + "/kept");
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("kept already exists"));
  EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr(dir)));  // no paths leak
  EXPECT_EQ(testing::ReadAll(dir + "/kept"), std::vector<uint8_t>({'o', 'l', 'd'}));
  ASSERT_EQ(mkdir((dir + "/empty").c_str(), 0755), 0);  // rename(2) would replace it
  EXPECT_EQ(RenameWithoutReplacing(dir + "/new", dir + "/empty").code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(RenameWithoutReplacing(dir + "/new", dir + "/published").ok());
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("empty", "kept", "published"));
}

TEST(Publish, GgufWriterRefusesAnExistingNameAndLeavesNoTemporary) {
  const std::string dir = testing::ScratchDir("publish_gguf");
  testing::WriteAll(dir + "/out.gguf", "old", 3);
  GgufFileWriter writer;
  writer.SetString("general.architecture", "llama");
  EXPECT_EQ(writer.WriteAtomically(dir + "/out.gguf").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre("out.gguf"));
  EXPECT_EQ(testing::ReadAll(dir + "/out.gguf"), std::vector<uint8_t>({'o', 'l', 'd'}));
}

TEST(Publish, StagingNamesKeepTheExtensionAndTheSweepTakesOnlyThem) {
  const std::string dir = testing::ScratchDir("publish_sweep");
  const std::string a = StagingPath(dir, "model.gguf");
  const std::string b = StagingPath(dir, "model.gguf");
  EXPECT_NE(a, b);
  EXPECT_THAT(a, StartsWith(dir + "/" + std::string(kStagingPrefix)));
  EXPECT_THAT(a, ::testing::EndsWith("-model.gguf"));
  testing::WriteAll(a, "x", 1);
  testing::WriteAll(a + ".tmp-abcdef", "x", 1);  // a writer's own temporary beside it
  ASSERT_EQ(mkdir(b.c_str(), 0755), 0);          // a staged Hugging Face directory
  testing::WriteAll(b + "/model.safetensors", "x", 1);
  testing::WriteAll(dir + "/published.gguf", "x", 1);
  testing::WriteAll(dir + "/.hidden", "x", 1);
  EXPECT_EQ(SweepStaged(dir), 3);
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre(".hidden", "published.gguf"));
  EXPECT_EQ(SweepStaged(dir), 0);
  EXPECT_EQ(SweepStaged(dir + "/missing"), 0);
  RemoveStaged(dir + "/published.gguf");
  EXPECT_THAT(testing::DirectoryEntries(dir), ElementsAre(".hidden"));
}

TEST(Utf8Prefix, NeverCutsInsideACharacter) {
  const std::string text = "ab\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // a b é € 😀
  EXPECT_EQ(Utf8Prefix(text, 100), text);
  EXPECT_EQ(Utf8Prefix(text, 2), "ab");
  EXPECT_EQ(Utf8Prefix(text, 3), "ab");  // é is two bytes
  EXPECT_EQ(Utf8Prefix(text, 4), "ab\xC3\xA9");
  EXPECT_EQ(Utf8Prefix(text, 6), "ab\xC3\xA9");
  EXPECT_EQ(Utf8Prefix(text, 7), "ab\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(Utf8Prefix(text, 10), "ab\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(Utf8Prefix(std::string("\xF0\x9F\x98\x80"), 3), "");
}

}  // namespace
}  // namespace superweight::publish_test
