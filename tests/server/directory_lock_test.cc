#include "server/directory_lock.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::server {
namespace {

using ::testing::HasSubstr;

std::string FreshDir(const std::string& name) { return testing::ScratchDir("lock_" + name); }

TEST(DirectoryLock, OneHolderWhateverThePathAndItsPidIsNamed) {
  const std::string dir = FreshDir("one");
  auto first = DirectoryLock::Acquire(dir, "--state_dir");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE((*first)->Holds(dir));
  // flock locks belong to an open file description: a second open, even in this process and
  // through another path to the same directory, is refused.
  const std::string link = dir + "-link";
  ::unlink(link.c_str());
  ASSERT_EQ(::symlink(dir.c_str(), link.c_str()), 0);
  auto second = DirectoryLock::Acquire(link + "/.", "--state_dir");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("process " + std::to_string(getpid())));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("--state_dir"));
  // Nothing is written into the directory.
  EXPECT_EQ(std::system(("test -z \"$(ls -A '" + dir + "')\"").c_str()), 0);
  first->reset();
  EXPECT_TRUE(DirectoryLock::Acquire(link, "--state_dir").ok());
  ::unlink(link.c_str());
}

TEST(DirectoryLock, AMissingDirectoryIsRefusedWithItsErrno) {
  auto lock = DirectoryLock::Acquire(FreshDir("missing") + "/absent", "--export_root");
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr("No such file or directory"));
}

}  // namespace
}  // namespace superweight::server
