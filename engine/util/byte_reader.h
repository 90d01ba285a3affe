// Bounds-checked little-endian reads over untrusted bytes. Every read of a file header goes
// through this, so a truncated or hostile file yields an error, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"

namespace superweight {

class ByteReader {
 public:
  ByteReader(absl::Span<const uint8_t> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {}

  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }
  const std::string& name() const { return name_; }

  template <typename T>
  absl::Status Read(T* out, const char* what) {
    if (remaining() < sizeof(T)) return Truncated(what);
    std::memcpy(out, bytes_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return absl::OkStatus();
  }

  // A length-prefixed (uint64) string; max_len bounds what a hostile length can allocate.
  absl::Status ReadString(std::string* out, const char* what, uint64_t max_len = 1 << 24) {
    uint64_t len = 0;
    if (auto s = Read(&len, what); !s.ok()) return s;
    if (len > remaining() || len > max_len) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s: string length %d at offset %d runs past the end of the file",
                          name_, what, len, offset_));
    }
    out->assign(reinterpret_cast<const char*>(bytes_.data() + offset_), len);
    offset_ += len;
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t n, const char* what) {
    if (n > remaining()) return Truncated(what);
    offset_ += n;
    return absl::OkStatus();
  }

  absl::Status Truncated(const char* what) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: truncated: %s at offset %d needs more bytes than the file has "
                        "(%d bytes)",
                        name_, what, offset_, bytes_.size()));
  }

 private:
  absl::Span<const uint8_t> bytes_;
  std::string name_;
  size_t offset_ = 0;
};

}  // namespace superweight
