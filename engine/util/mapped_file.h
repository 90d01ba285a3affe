// A read-only memory map of a whole file. Opening costs one mmap, whatever the size:
// weights are read in place and never copied.
//
// A file shortened in place while mapped would raise SIGBUS on the next read past its new end and
// end the process. Every mapping is therefore guarded: such a fault replaces the mapping's pages
// from there on with zeros and marks the mapping faulted, and the reader carries on. Whoever
// trusts what was read asks CheckUnchanged() afterwards, which also catches rewrites that keep the
// size. Replacing a file by rename never disturbs a mapping of the old one.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace superweight {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

  // Whether a read found the file shorter than when it was mapped (what was read there is zeros).
  // Cheap: for polling during long work.
  bool faulted() const { return faulted_.load(std::memory_order_relaxed); }
  // ABORTED, saying what happened, where the mapped file was shortened or rewritten in place
  // since it was opened: what was read from it may not be what it held.
  absl::Status CheckUnchanged() const;

 private:
  MappedFile(std::string path, int fd, const struct stat& st, const uint8_t* data, size_t size)
      : path_(std::move(path)), fd_(fd), opened_(st), data_(data), size_(size) {}
  std::string path_;
  int fd_;              // kept open to ask the mapped file itself, whatever its path names now
  struct stat opened_;  // the file when it was mapped
  const uint8_t* data_;
  size_t size_;
  std::atomic<bool> faulted_{false};
  int guard_slot_ = -1;
};

}  // namespace superweight
