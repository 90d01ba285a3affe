#include "engine/util/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "engine/export/export_hf.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::mapped_file_test {
namespace {

using testing::ScratchDir;
using testing::TestData;
using testing::WriteAll;

constexpr size_t kFileBytes = 256 << 10;

std::string FileOf(const std::string& dir, uint8_t fill) {
  const std::string path = dir + "/mapped.bin";
  std::vector<uint8_t> bytes(kFileBytes, fill);
  WriteAll(path, bytes.data(), bytes.size());
  return path;
}

// What a reader the compiler cannot skip sees at offset.
uint8_t ReadAt(const MappedFile& f, size_t offset) {
  return *static_cast<const volatile uint8_t*>(f.data() + offset);
}

TEST(MappedFile, AFileShortenedUnderItsMappingReadsZerosAndSaysSo) {
  const std::string dir = ScratchDir("mapped_shortened");
  const std::string path = FileOf(dir, 0xAB);
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(ReadAt(**file, kFileBytes - 1), 0xAB);
  EXPECT_FALSE((*file)->faulted());
  EXPECT_TRUE((*file)->CheckUnchanged().ok());

  ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
  EXPECT_EQ(ReadAt(**file, 100), 0xAB);  // still in the file
  // Without the guard this read raises SIGBUS and ends the process.
  EXPECT_EQ(ReadAt(**file, 200000), 0);
  EXPECT_TRUE((*file)->faulted());
  // Every page from the fault to the end reads as zeros, each without a fault of its own.
  for (size_t offset = 200000; offset < kFileBytes; offset += 4096) {
    EXPECT_EQ(ReadAt(**file, offset), 0);
  }
  absl::Status s = (*file)->CheckUnchanged();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_NE(s.message().find("shortened in place (262144 to 4096 bytes)"), std::string::npos) << s;
  EXPECT_NE(s.message().find("rename"), std::string::npos) << s;
}

TEST(MappedFile, ThreadsFaultingAtOnceAllCarryOn) {
  const std::string dir = ScratchDir("mapped_threads");
  const std::string path = FileOf(dir, 0x11);
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  std::vector<std::thread> readers;
  std::vector<uint64_t> sums(4, 1);
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      uint64_t sum = 0;
      for (size_t offset = t * 512; offset < kFileBytes; offset += 2048) {
        sum += ReadAt(**file, offset);
      }
      sums[t] = sum;
    });
  }
  for (std::thread& r : readers) r.join();
  for (uint64_t sum : sums) EXPECT_EQ(sum, 0u);
  EXPECT_TRUE((*file)->faulted());
  EXPECT_EQ((*file)->CheckUnchanged().code(), absl::StatusCode::kAborted);
}

TEST(MappedFile, AFileRewrittenInPlaceAtItsSizeIsReported) {
  const std::string dir = ScratchDir("mapped_rewritten");
  const std::string path = FileOf(dir, 0x22);
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const uint8_t other = 0x33;
  ASSERT_EQ(::pwrite(fd, &other, 1, 1000), 1);
  const struct timespec times[2] = {{0, UTIME_OMIT},
                                    {12345, 0}};  // a new mtime, whatever the clock
  ASSERT_EQ(::futimens(fd, times), 0);
  ::close(fd);
  EXPECT_EQ(ReadAt(**file, 1000), 0x33);  // a shared mapping sees the write
  EXPECT_FALSE((*file)->faulted());
  absl::Status s = (*file)->CheckUnchanged();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_NE(s.message().find("rewritten in place"), std::string::npos) << s;
}

TEST(MappedFile, AFileReplacedByRenameLeavesTheMappingWhole) {
  const std::string dir = ScratchDir("mapped_renamed");
  const std::string path = FileOf(dir, 0x44);
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string replacement = dir + "/replacement.bin";
  WriteAll(replacement, "x", 1);
  ASSERT_EQ(std::rename(replacement.c_str(), path.c_str()), 0);
  EXPECT_EQ(ReadAt(**file, kFileBytes - 1), 0x44);
  EXPECT_TRUE((*file)->CheckUnchanged().ok());
}

TEST(MappedFileDeathTest, ASigbusOutsideTheGuardedMappingsStillEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string dir = ScratchDir("mapped_unguarded");
  const std::string path = FileOf(dir, 0x55);
  auto guarded = MappedFile::Open(path);  // installs the handler
  ASSERT_TRUE(guarded.ok()) << guarded.status();
  EXPECT_DEATH(
      {
        const int fd = ::open(path.c_str(), O_RDONLY);
        void* p = ::mmap(nullptr, kFileBytes, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED || ::ftruncate(::open(path.c_str(), O_WRONLY), 0) != 0) std::_Exit(0);
        std::fprintf(stderr, "%d\n", static_cast<const volatile uint8_t*>(p)[200000]);
        std::_Exit(0);
      },
      "");
}

TEST(MappedFile, AnExportRefusesASourceShortenedWhileItWasRead) {
  const std::string dir = ScratchDir("mapped_export");
  const std::string source = dir + "/model";
  ASSERT_EQ(
      std::system(("cp -r '" + TestData("hf_tinystories_656k") + "' '" + source + "'").c_str()), 0);
  auto model = OpenModel(source);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ(::truncate((source + "/model.safetensors").c_str(), 4096), 0);
  absl::Status s = ExportHuggingFace(**model, dir + "/out", DType::kF32);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_TRUE((*model)->MappingFaulted());
  struct stat st;
  EXPECT_NE(::stat((dir + "/out").c_str(), &st), 0);  // nothing published
  EXPECT_EQ(std::system(("ls '" + dir + "' | grep -q tmp").c_str()) == 0, false);  // no leftovers
}

}  // namespace
}  // namespace superweight::mapped_file_test
