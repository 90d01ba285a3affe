#include "engine/export/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"

namespace superweight {
namespace {

// Rows arrive a few kilobytes at a time; a megabyte per write() keeps system calls rare.
constexpr size_t kBufferBytes = size_t{1} << 20;

}  // namespace

OutputFile::OutputFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {
  buffer_.reserve(kBufferBytes);
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<OutputFile>> OutputFile::Create(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrFormat("%s: cannot create", path));
  return std::unique_ptr<OutputFile>(new OutputFile(fd, path));
}

absl::Status OutputFile::WriteAll(const uint8_t* data, size_t n) {
  while (n > 0) {
    // Linux writes at most about 2 GiB per call; a short write just continues.
    const ssize_t written = ::write(fd_, data, std::min(n, size_t{1} << 30));
    if (written < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrFormat("%s: write failed", path_));
    }
    data += written;
    n -= static_cast<size_t>(written);
  }
  return absl::OkStatus();
}

absl::Status OutputFile::Flush() {
  absl::Status status = WriteAll(buffer_.data(), buffer_.size());
  buffer_.clear();
  return status;
}

absl::Status OutputFile::Append(absl::Span<const uint8_t> bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrFormat("%s: closed", path_));
  if (buffer_.size() + bytes.size() > kBufferBytes) {
    if (auto s = Flush(); !s.ok()) return s;
  }
  if (bytes.size() >= kBufferBytes) return WriteAll(bytes.data(), bytes.size());
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
  return absl::OkStatus();
}

absl::Status OutputFile::Append(absl::string_view text) {
  return Append(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

absl::Status OutputFile::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrFormat("%s: closed", path_));
  absl::Status status = Flush();
  if (status.ok() && ::fsync(fd_) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrFormat("%s: fsync failed", path_));
  }
  if (::close(fd_) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrFormat("%s: close failed", path_));
  }
  fd_ = -1;
  return status;
}

absl::Status CopyFileContents(const std::string& source, const std::string& destination) {
  const int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return absl::ErrnoToStatus(errno, absl::StrFormat("%s: cannot open", source));
  absl::Status status;
  auto out = OutputFile::Create(destination);
  if (!out.ok()) status = out.status();
  std::vector<uint8_t> chunk(kBufferBytes);
  while (status.ok()) {
    const ssize_t got = ::read(in, chunk.data(), chunk.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      status = absl::ErrnoToStatus(errno, absl::StrFormat("%s: read failed", source));
    } else if (got == 0) {
      status = (*out)->Finish();
      break;
    } else {
      status = (*out)->Append(absl::Span<const uint8_t>(chunk.data(), static_cast<size_t>(got)));
    }
  }
  ::close(in);
  return status;
}

}  // namespace superweight
