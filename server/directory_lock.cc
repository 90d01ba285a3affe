#include "server/directory_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace superweight::server {
namespace {

// Beside the lock, for the message of a server refused: the lock itself says nothing of its
// holder.
constexpr char kOwnerFile[] = ".superweightd-owner";

std::string OwnerOf(const std::string& dir) {
  std::ifstream f(dir + "/" + kOwnerFile);
  std::stringstream text;
  text << f.rdbuf();
  int pid = 0;
  if (f && absl::SimpleAtoi(absl::StripAsciiWhitespace(text.str()), &pid) && pid > 0) {
    return absl::StrCat("process ", pid);
  }
  return "another process";
}

}  // namespace

absl::StatusOr<std::unique_ptr<DirectoryLock>> DirectoryLock::Acquire(const std::string& dir,
                                                                      const std::string& what) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " ", dir, " cannot be opened: ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, " ", dir, " belongs to another live superweightd (", OwnerOf(dir),
          "): one server per directory; stop it or give this one a directory of its own"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(what, " ", dir, " cannot be locked: ", std::strerror(error)));
  }
  // Best effort: a read-only directory is refused by whoever needs to write there.
  const std::string owner = dir + "/" + kOwnerFile;
  {
    std::ofstream f(owner + ".tmp", std::ios::trunc);
    f << ::getpid() << "\n";
  }
  if (std::rename((owner + ".tmp").c_str(), owner.c_str()) != 0) {
    std::remove((owner + ".tmp").c_str());
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
