// Helpers shared by the unit tests: paths to the test data and scratch files.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/model/model.h"
#include "engine/runtime/cpu.h"
#include "gtest/gtest.h"

namespace superweight::testing {

// The source tree's testdata/rel and Ablate's evaluation sets (test_util.cc: the one file
// compiled with the checkout's paths, so that the other test files' objects do not depend on
// where the tree was cloned and a compiler cache serves every clone).
std::string TestData(const std::string& rel);
std::string EvalDataDir();

inline std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

inline void WriteAll(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), n);
}

// The names in dir (not . and ..), sorted.
inline std::vector<std::string> DirectoryEntries(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The scratch directories a test process made, removed when it ends (each ctest test is a
// process of its own) unless a test failed, so that a failure's files can still be read.
class ScratchDirsRemovedAtExit {
 public:
  static void Add(std::string dir) {
    static ScratchDirsRemovedAtExit dirs;  // destroyed at exit, after the tests ran
    std::lock_guard<std::mutex> lock(dirs.mu_);
    dirs.dirs_.push_back(std::move(dir));
  }
  ~ScratchDirsRemovedAtExit() {
    if (!::testing::UnitTest::GetInstance()->Passed()) return;
    for (const std::string& dir : dirs_) {
      // Read-only entries (the tests of unwritable outputs) are made removable first.
      const std::string cmd = "chmod -R u+rwX '" + dir + "' 2>/dev/null; rm -rf '" + dir + "'";
      if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir.c_str());
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::string> dirs_;
};

// A fresh directory under the test's temporary directory, removed at the process's end. A
// death test's child (threadsafe style: the test binary run again, which dies without exit
// handlers) makes its own beside its parent's, and the parent removes both.
inline std::string ScratchDir(const std::string& name) {
  const bool death_test_child = !GTEST_FLAG_GET(internal_run_death_test).empty();
  std::string dir = ::testing::TempDir() + "sw_" + name + "_" +
                    std::to_string(death_test_child ? ::getppid() : ::getpid());
  const std::string child_dir = dir + "_death_test";
  if (death_test_child) dir = child_dir;
  std::string cmd = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  if (!death_test_child) {
    ScratchDirsRemovedAtExit::Add(dir);
    ScratchDirsRemovedAtExit::Add(child_dir);
  }
  return dir;
}

// The small Hugging Face model of testdata/ (TinyStories-656K), opened once per process.
inline std::shared_ptr<const Model> TinyStories() {
  static std::shared_ptr<const Model> model = [] {
    auto m = OpenModel(TestData("hf_tinystories_656k"));
    EXPECT_TRUE(m.ok()) << m.status();
    return std::shared_ptr<const Model>(std::move(*m));
  }();
  return model;
}

// Runs body(isa) once for each CPU class up to the one this process runs at, with the engine's
// own kernels capped at it (oneDNN keeps its cap), so that one machine checks the paths of
// lesser ones; restores the ceiling afterwards.
template <typename Body>
void ForEachCpuClass(Body body) {
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx}) {
    if (static_cast<int>(isa) > static_cast<int>(Cpu().active)) break;
    internal::SetIsaCeilingForTests(isa);
    SCOPED_TRACE(IsaName(isa));
    body(isa);
  }
  internal::SetIsaCeilingForTests(Isa::kAmx);
}

}  // namespace superweight::testing
