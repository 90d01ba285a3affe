#include "server/model_registry.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::server {
namespace {

std::string TestData(const std::string& rel) {
  return std::string(SUPERWEIGHT_TESTDATA) + "/" + rel;
}

// A model root holding a copy of stories260K and a broken GGUF.
std::string MakeRoot(const std::string& name) {
  const std::string root = testing::ScratchDir("registry_" + name);
  const std::string cmd = "cp '" + TestData("stories260K/stories260K.bin") + "' '" +
                          TestData("stories260K/tok512.bin") + "' '" + root + "/'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  std::ofstream(root + "/broken.gguf", std::ios::binary) << "GGUF\x03";
  return root;
}

TEST(ModelRegistry, DescribeNeitherKeepsModelsOpenNorReopensThem) {
  ModelRegistry registry(MakeRoot("describe"), uint64_t{1} << 30);
  auto summary = registry.Describe("stories260K.bin");
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->layers, 5);
  EXPECT_EQ(summary->architecture, "llama");
  EXPECT_EQ(summary->format, "llama2c");
  EXPECT_GT(summary->mapped_bytes, 0u);
  EXPECT_FALSE(summary->loaded);
  EXPECT_EQ(registry.LoadedCount(), 0);  // not kept open, not in the LRU
  EXPECT_EQ(registry.OpenCount(), 1u);

  ASSERT_TRUE(registry.Describe("stories260K.bin").ok());
  EXPECT_EQ(registry.OpenCount(), 1u);  // cached

  // A broken file's error is cached too, and names it relative to the root.
  auto broken = registry.Describe("broken.gguf");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("broken.gguf"), std::string::npos);
  EXPECT_EQ(broken.status().message().find(::testing::TempDir()), std::string::npos);
  EXPECT_FALSE(registry.Describe("broken.gguf").ok());
  EXPECT_EQ(registry.OpenCount(), 2u);
}

TEST(ModelRegistry, DescribeUsesTheOpenModelAndSeesReplacedFiles) {
  const std::string root = MakeRoot("replaced");
  ModelRegistry registry(root, uint64_t{1} << 30);
  {
    auto model = registry.Get("stories260K.bin");
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(registry.OpenCount(), 1u);
    auto summary = registry.Describe("stories260K.bin");
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_TRUE(summary->loaded);
    EXPECT_EQ(registry.OpenCount(), 1u);  // the open model answered
  }
  // A file that changes is read again.
  ASSERT_TRUE(registry.Describe("broken.gguf").status().code() != absl::StatusCode::kOk);
  const uint64_t before = registry.OpenCount();
  std::ofstream(root + "/broken.gguf", std::ios::binary | std::ios::app) << "more bytes";
  EXPECT_FALSE(registry.Describe("broken.gguf").ok());
  EXPECT_EQ(registry.OpenCount(), before + 1);
}

TEST(ModelRegistry, DiscoverFollowsNoDirectoryTwice) {
  const std::string root = MakeRoot("loop");
  ASSERT_EQ(::mkdir((root + "/family").c_str(), 0755), 0);
  ASSERT_EQ(::symlink(root.c_str(), (root + "/loop").c_str()), 0);  // back to the root
  ASSERT_EQ(::symlink("..", (root + "/family/up").c_str()), 0);     // and from below it
  ASSERT_EQ(::symlink("family", (root + "/alias").c_str()), 0);     // a directory twice
  std::ofstream(root + "/family/small.gguf", std::ios::binary) << "GGUF\x03";
  ModelRegistry registry(root, uint64_t{1} << 30);
  EXPECT_EQ(registry.Discover(),
            (std::vector<std::string>{"broken.gguf", "family/small.gguf", "stories260K.bin"}));
}

TEST(ModelRegistry, DescribeRefusesPathsOutsideTheRoot) {
  ModelRegistry registry(MakeRoot("outside"), uint64_t{1} << 30);
  EXPECT_EQ(registry.Describe("../x.gguf").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Describe("missing.gguf").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.OpenCount(), 0u);
}

// A model file changed in place (truncated, rewritten) is never used through its old mapping:
// the next Get opens the file again and fails cleanly when it no longer parses, and a later
// good copy is opened afresh. A handle given out before keeps its own mapping.
TEST(ModelRegistry, GetReopensAModelWhoseFileChanged) {
  const std::string root = MakeRoot("changed");
  const std::string file = root + "/stories260K.bin";
  ModelRegistry registry(root, uint64_t{1} << 30);
  auto first = registry.Get("stories260K.bin");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(registry.Get("stories260K.bin").ok());
  EXPECT_EQ(registry.OpenCount(), 1u);
  ASSERT_EQ(::truncate(file.c_str(), 1000), 0);
  auto truncated = registry.Get("stories260K.bin");
  EXPECT_FALSE(truncated.ok());
  EXPECT_EQ(registry.ReopenCount(), 1u);
  const std::string restore = "cp '" + TestData("stories260K/stories260K.bin") + "' '" + file + "'";
  ASSERT_EQ(std::system(restore.c_str()), 0);
  auto again = registry.Get("stories260K.bin");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->get(), first->get());
  EXPECT_EQ((*again)->config.layers, 5);
  EXPECT_EQ(registry.Get("stories260K.bin")->get(), again->get());  // unchanged: the same
}

TEST(ModelRegistry, SpecialFilesAreNeitherListedNorOpened) {
  const std::string root = MakeRoot("fifo");
  ASSERT_EQ(::mkfifo((root + "/x.gguf").c_str(), 0644), 0);  // opening it would block
  ModelRegistry registry(root, uint64_t{1} << 30);
  for (const std::string& name : registry.Discover()) EXPECT_NE(name, "x.gguf");
  auto model = registry.Get("x.gguf");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("not a regular file"), std::string::npos);
  EXPECT_FALSE(registry.Describe("x.gguf").ok());
  // The engine's own open does not block on one either.
  EXPECT_FALSE(OpenModel(root + "/x.gguf").ok());
}

}  // namespace
}  // namespace superweight::server
