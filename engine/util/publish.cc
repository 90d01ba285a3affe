#include "engine/util/publish.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace superweight {
namespace {

std::string ParentOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrFormat("%s: cannot open", dir));
  const bool synced = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!synced) return absl::ErrnoToStatus(error, absl::StrFormat("%s: fsync failed", dir));
  return absl::OkStatus();
}

std::string StagingPath(const std::string& dir, const std::string& name) {
  static thread_local std::mt19937_64 random(std::random_device{}());
  return absl::StrFormat("%s/%s%016x-%s", dir, kStagingPrefix, random(), name);
}

absl::Status RenameWithoutReplacing(const std::string& from, const std::string& to) {
  // Messages name the files, not the directories around them: callers know where they write.
  const std::string name = BaseName(to);
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
    const int error = errno;
    if (error == EEXIST || error == ENOTEMPTY) {
      return absl::AlreadyExistsError(absl::StrFormat("%s already exists", name));
    }
    if (error != EINVAL && error != ENOSYS) {
      return absl::ErrnoToStatus(error, absl::StrFormat("%s: cannot publish it", name));
    }
    // A file system without RENAME_NOREPLACE: looked at first, then renamed (a narrow race).
    struct stat st;
    if (::lstat(to.c_str(), &st) == 0) {
      return absl::AlreadyExistsError(absl::StrFormat("%s already exists", name));
    }
    if (std::rename(from.c_str(), to.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrFormat("%s: cannot publish it", name));
    }
  }
  SyncDirectory(ParentOf(to)).IgnoreError();  // the rename stands either way
  return absl::OkStatus();
}

void RemoveStaged(const std::string& path) {
  std::error_code ignored;
  std::filesystem::remove_all(path, ignored);
}

int SweepStaged(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    if (absl::string_view(e->d_name).substr(0, kStagingPrefix.size()) == kStagingPrefix) {
      names.push_back(e->d_name);
    }
  }
  ::closedir(d);
  int removed = 0;
  for (const std::string& name : names) {
    std::error_code error;
    if (std::filesystem::remove_all(dir + "/" + name, error) > 0 && !error) ++removed;
  }
  if (removed > 0) SyncDirectory(dir).IgnoreError();
  return removed;
}

}  // namespace superweight
