#include "engine/formats/gguf_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/util/publish.h"
#include "engine/util/umask.h"

namespace superweight {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kGgufVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr size_t kGgmlMaxName = 64;  // llama.cpp refuses tensor names this long or longer

template <typename T>
void AppendPod(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

void AppendString(std::vector<uint8_t>& out, const std::string& s) {
  AppendPod(out, uint64_t{s.size()});
  out.insert(out.end(), s.begin(), s.end());
}

uint64_t RoundUp(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

// Appends to a file descriptor through a buffer, so that a tensor produced a row at a time costs
// few system calls; spans larger than the buffer go straight to the file.
class BufferedFileSink {
 public:
  BufferedFileSink(int fd, const std::string& path) : fd_(fd), path_(path) {
    buffer_.reserve(kBufferBytes);
  }

  absl::Status Append(absl::Span<const uint8_t> bytes) {
    if (buffer_.size() + bytes.size() > kBufferBytes) {
      if (auto s = Flush(); !s.ok()) return s;
    }
    if (bytes.size() >= kBufferBytes) return WriteAll(bytes.data(), bytes.size());
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    return absl::OkStatus();
  }

  absl::Status AppendZeros(size_t n) {
    static const uint8_t kZeros[256] = {};
    while (n > 0) {
      const size_t chunk = std::min(n, sizeof(kZeros));
      if (auto s = Append({kZeros, chunk}); !s.ok()) return s;
      n -= chunk;
    }
    return absl::OkStatus();
  }

  absl::Status Flush() {
    absl::Status s = WriteAll(buffer_.data(), buffer_.size());
    buffer_.clear();
    return s;
  }

 private:
  static constexpr size_t kBufferBytes = size_t{1} << 20;

  absl::Status WriteAll(const uint8_t* p, size_t n) {
    while (n > 0) {
      // Linux writes at most about 2 GiB per call; a short write just continues.
      const ssize_t w = ::write(fd_, p, std::min(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrFormat("%s: write failed", path_));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }

  int fd_;
  const std::string& path_;
  std::vector<uint8_t> buffer_;
};

// The permissions a file created with open(0666) would get (mkstemp makes it 0600).
mode_t ModeForNewFile() { return 0666 & ~ProcessUmask(); }

}  // namespace

void GgufFileWriter::Set(const std::string& key, uint32_t type, std::vector<uint8_t> encoded) {
  for (Entry& e : entries_) {
    if (e.key == key) {
      e.type = type;
      e.encoded = std::move(encoded);
      return;
    }
  }
  entries_.push_back({key, type, std::move(encoded)});
}

void GgufFileWriter::CopyMetadataFrom(const GgufFile& source,
                                      const std::function<bool(const std::string& key)>& skip) {
  for (const std::string& key : source.metadata_order) {
    if (skip && skip(key)) continue;
    const GgufValue& v = source.metadata.at(key);
    Set(key, v.type, std::vector<uint8_t>(v.encoded.begin(), v.encoded.end()));
  }
}

void GgufFileWriter::SetString(const std::string& key, const std::string& value) {
  std::vector<uint8_t> encoded;
  AppendString(encoded, value);
  Set(key, kGgufString, std::move(encoded));
}

void GgufFileWriter::SetStringArray(const std::string& key,
                                    const std::vector<std::string>& values) {
  std::vector<uint8_t> encoded;
  AppendPod(encoded, static_cast<uint32_t>(kGgufString));
  AppendPod(encoded, static_cast<uint64_t>(values.size()));
  for (const std::string& v : values) AppendString(encoded, v);
  Set(key, kGgufArray, std::move(encoded));
}

void GgufFileWriter::SetUint32(const std::string& key, uint32_t value) {
  std::vector<uint8_t> encoded;
  AppendPod(encoded, value);
  Set(key, kGgufU32, std::move(encoded));
}

void GgufFileWriter::SetFloat32(const std::string& key, float value) {
  std::vector<uint8_t> encoded;
  AppendPod(encoded, value);
  Set(key, kGgufF32, std::move(encoded));
}

bool GgufFileWriter::Remove(const std::string& key) {
  auto it =
      std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.key == key; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

bool GgufFileWriter::Has(const std::string& key) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const Entry& e) { return e.key == key; });
}

absl::Status GgufFileWriter::CheckTensor(const std::string& name, const std::vector<int64_t>& ne,
                                         DType type, uint64_t* nbytes) const {
  if (name.empty() || name.size() >= kGgmlMaxName) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor name '%s' must have 1 to %d bytes", name, kGgmlMaxName - 1));
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor '%s' added twice", name));
    }
  }
  if (ne.empty() || ne.size() > 4) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s' has %d dimensions (1 to 4)", name, ne.size()));
  }
  uint64_t numel = 1;
  for (int64_t d : ne) {
    if (d < 1 || numel > (uint64_t{1} << 50) / static_cast<uint64_t>(d)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' has a bad shape (dimension %d)", name, d));
    }
    numel *= static_cast<uint64_t>(d);
  }
  if (ne[0] % Traits(type).block_elements != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor '%s': rows of %d elements are not whole %s blocks", name, ne[0], DTypeName(type)));
  }
  auto bytes = StorageBytes(type, numel);
  if (!bytes.ok()) return bytes.status();
  *nbytes = *bytes;
  return absl::OkStatus();
}

absl::Status GgufFileWriter::AddTensor(const std::string& name, std::vector<int64_t> ne, DType type,
                                       absl::Span<const uint8_t> data) {
  uint64_t nbytes = 0;
  if (auto s = CheckTensor(name, ne, type, &nbytes); !s.ok()) return s;
  if (data.size() != nbytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s': %d bytes given, its shape and %s take %d", name, data.size(),
                        DTypeName(type), nbytes));
  }
  tensors_.push_back(
      {name, std::move(ne), type, nbytes, [data](const ByteSink& sink) { return sink(data); }});
  return absl::OkStatus();
}

absl::Status GgufFileWriter::AddTensor(const std::string& name, std::vector<int64_t> ne, DType type,
                                       TensorProducer produce) {
  uint64_t nbytes = 0;
  if (auto s = CheckTensor(name, ne, type, &nbytes); !s.ok()) return s;
  if (!produce) return absl::InvalidArgumentError(absl::StrFormat("tensor '%s': no data", name));
  tensors_.push_back({name, std::move(ne), type, nbytes, std::move(produce)});
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> GgufFileWriter::Alignment() const {
  for (const Entry& e : entries_) {
    if (e.key != "general.alignment") continue;
    uint32_t alignment = 0;
    if (e.type == kGgufU32 && e.encoded.size() == 4) std::memcpy(&alignment, e.encoded.data(), 4);
    // llama.cpp reads the key as a uint32 and refuses any other type.
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      return absl::InvalidArgumentError(
          "general.alignment must be a uint32 power of two, as llama.cpp reads it");
    }
    return alignment;
  }
  return kDefaultAlignment;
}

absl::Status GgufFileWriter::WriteTo(int fd, uint32_t alignment, const std::string& path) const {
  std::vector<uint8_t> header;
  AppendPod(header, kGgufMagic);
  AppendPod(header, kGgufVersion);
  AppendPod(header, uint64_t{tensors_.size()});
  AppendPod(header, uint64_t{entries_.size()});
  for (const Entry& e : entries_) {
    AppendString(header, e.key);
    AppendPod(header, e.type);
    header.insert(header.end(), e.encoded.begin(), e.encoded.end());
  }
  uint64_t offset = 0;  // within the data section, each tensor's start aligned
  for (const Tensor& t : tensors_) {
    AppendString(header, t.name);
    AppendPod(header, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) AppendPod(header, static_cast<uint64_t>(d));
    AppendPod(header, GgmlTypeId(t.type));
    AppendPod(header, offset);
    offset += RoundUp(t.nbytes, alignment);
  }
  header.resize(RoundUp(header.size(), alignment), 0);

  BufferedFileSink file(fd, path);
  if (auto s = file.Append(header); !s.ok()) return s;
  for (const Tensor& t : tensors_) {
    uint64_t written = 0;
    const ByteSink sink = [&](absl::Span<const uint8_t> bytes) -> absl::Status {
      if (bytes.size() > t.nbytes - written) {
        return absl::InternalError(absl::StrFormat(
            "%s: tensor '%s' was given more than its %d bytes", path, t.name, t.nbytes));
      }
      written += bytes.size();
      return file.Append(bytes);
    };
    if (auto s = t.produce(sink); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("%s: tensor '%s': %s", path, t.name, s.message()));
    }
    if (written != t.nbytes) {
      return absl::InternalError(absl::StrFormat("%s: tensor '%s' was given %d of its %d bytes",
                                                 path, t.name, written, t.nbytes));
    }
    // Every tensor padded, the last one too, as llama.cpp's own writer does.
    if (auto s = file.AppendZeros(RoundUp(t.nbytes, alignment) - t.nbytes); !s.ok()) return s;
  }
  return file.Flush();
}

absl::Status GgufFileWriter::WriteAtomically(
    const std::string& path, const std::function<absl::Status()>& before_publish) const {
  auto alignment = Alignment();
  if (!alignment.ok()) return alignment.status();
  std::string temp_path = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(temp_path.data());
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrFormat("%s: cannot create a temporary file beside it", path));
  }
  absl::Status status = WriteTo(fd, *alignment, path);
  if (status.ok() && before_publish) status = before_publish();
  if (status.ok() && ::fchmod(fd, ModeForNewFile()) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrFormat("%s: chmod failed", temp_path));
  }
  // The data must be on disk before the rename makes it the file, or a crash could leave path
  // naming a file with holes.
  if (status.ok() && ::fsync(fd) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrFormat("%s: fsync failed", temp_path));
  }
  if (::close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrFormat("%s: close failed", temp_path));
  }
  if (status.ok()) status = RenameWithoutReplacing(temp_path, path);
  if (!status.ok()) ::unlink(temp_path.c_str());
  return status;
}

}  // namespace superweight
