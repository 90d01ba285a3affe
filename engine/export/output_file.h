// A new file written through a buffer and made durable before it is closed: what the exporters
// write inside the temporary directory they later rename into place.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace superweight {

class OutputFile {
 public:
  // Creates path, which must not exist (ALREADY_EXISTS otherwise); mode 0666 less the umask.
  static absl::StatusOr<std::unique_ptr<OutputFile>> Create(const std::string& path);
  // Closes the file if Finish was not reached; what was written stays incomplete.
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  absl::Status Append(absl::Span<const uint8_t> bytes);
  absl::Status Append(absl::string_view text);
  // Flushes the buffer, fsyncs and closes: the file is whole on disk only once this succeeds.
  absl::Status Finish();

  const std::string& path() const { return path_; }

 private:
  OutputFile(int fd, std::string path);
  absl::Status Flush();
  absl::Status WriteAll(const uint8_t* data, size_t n);

  int fd_;
  std::string path_;
  std::vector<uint8_t> buffer_;
};

// Copies source into a new file at destination (Create's rules), synced.
absl::Status CopyFileContents(const std::string& source, const std::string& destination);

}  // namespace superweight
