// One live server per directory it owns (the state directory, the export root): an exclusive
// flock(2) on the directory itself, so that another path to the same directory (a symlink, a
// bind mount) is caught too, held until the process ends (the kernel drops it even after
// kill -9). Nothing is written into the directory: the refusal finds the holder's pid in the
// kernel's table of locks.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace superweight::server {

class DirectoryLock {
 public:
  // Locks dir (which must exist) for `what` (the flag naming it, for messages): UNAVAILABLE
  // naming the process that holds it; where it cannot be opened or locked, the errno's status
  // with its text.
  static absl::StatusOr<std::unique_ptr<DirectoryLock>> Acquire(const std::string& dir,
                                                                const std::string& what);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  // Whether `dir` is the directory this lock holds (the same inode, whatever the path).
  bool Holds(const std::string& dir) const;

 private:
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace superweight::server
