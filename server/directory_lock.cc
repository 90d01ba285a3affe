#include "server/directory_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace superweight::server {
namespace {

// The lock says nothing of its holder; the kernel's table of locks does (/proc/locks: "1: FLOCK
// ADVISORY WRITE PID MAJOR:MINOR:INODE 0 EOF", device numbers in hex).
std::string HolderOf(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return "another process";
  const std::string device = absl::StrFormat("%02x:%02x:%d", major(st.st_dev), minor(st.st_dev),
                                             static_cast<uint64_t>(st.st_ino));
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // A blocked waiter's line starts "1: ->": its fields are shifted by one.
    if (fields.size() >= 6 && fields[1] == "FLOCK" && fields[5] == device) {
      int pid = 0;
      if (absl::SimpleAtoi(fields[4], &pid) && pid > 0) return absl::StrCat("process ", pid);
    }
  }
  return "another process";
}

}  // namespace

absl::StatusOr<std::unique_ptr<DirectoryLock>> DirectoryLock::Acquire(const std::string& dir,
                                                                      const std::string& what) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::Status(absl::ErrnoToStatusCode(errno), std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    const std::string holder = error == EWOULDBLOCK ? HolderOf(fd) : "";
    ::close(fd);
    if (error == EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat(
          what, " ", dir, " belongs to another live superweightd (", holder,
          "): one server per directory; stop it or give this one a directory of its own"));
    }
    return absl::Status(absl::ErrnoToStatusCode(error), std::strerror(error));
  }
  return std::unique_ptr<DirectoryLock>(new DirectoryLock(fd));
}

DirectoryLock::~DirectoryLock() { ::close(fd_); }

bool DirectoryLock::Holds(const std::string& dir) const {
  struct stat held, other;
  return ::fstat(fd_, &held) == 0 && ::stat(dir.c_str(), &other) == 0 &&
         held.st_dev == other.st_dev && held.st_ino == other.st_ino;
}

}  // namespace superweight::server
