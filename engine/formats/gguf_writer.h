// Writer of GGUF v3 files for exports: metadata copied from a parsed source byte for byte (exact
// value types, the source's key order) with overrides, tensors streamed to the file one at a time,
// the file replaced atomically. (tests/unit/gguf_writer.h is a different thing: the tests' builder
// of small, possibly broken, files in memory.)
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/formats/dtype.h"
#include "engine/formats/gguf.h"

namespace superweight {

class GgufFileWriter {
 public:
  // Where a tensor's bytes go at write time; each call appends.
  using ByteSink = std::function<absl::Status(absl::Span<const uint8_t>)>;
  // Produces one tensor's bytes through the sink, in order, in as many calls as it likes: exactly
  // the tensor's StorageBytes in all, else the write fails. Called once, during WriteAtomically,
  // so a tensor (a requantized one, say) need never be whole in memory.
  using TensorProducer = std::function<absl::Status(const ByteSink& sink)>;

  // Every metadata entry of source, in the source's order, as the source encodes it, except the
  // keys skip says true for. An entry whose key is already set is replaced where it stands (the
  // same for the setters below; a new key goes last).
  void CopyMetadataFrom(const GgufFile& source,
                        const std::function<bool(const std::string& key)>& skip = nullptr);
  void SetString(const std::string& key, const std::string& value);
  void SetUint32(const std::string& key, uint32_t value);
  void SetFloat32(const std::string& key, float value);
  void SetStringArray(const std::string& key, const std::vector<std::string>& values);
  // Removes a key if present (returns whether it was).
  bool Remove(const std::string& key);
  bool Has(const std::string& key) const;

  // A tensor of shape ne (GGML order: ne[0] the contiguous dimension, 1 to 4 dimensions, each at
  // least 1, ne[0] whole blocks of type). INVALID_ARGUMENT for a bad shape, a name that is empty,
  // taken, or 64 bytes or longer (llama.cpp's GGML_MAX_NAME), or data of the wrong size. The
  // span's bytes are read during WriteAtomically and must live until then.
  absl::Status AddTensor(const std::string& name, std::vector<int64_t> ne, DType type,
                         absl::Span<const uint8_t> data);
  absl::Status AddTensor(const std::string& name, std::vector<int64_t> ne, DType type,
                         TensorProducer produce);

  // Writes the file to a temporary (path + ".tmp-XXXXXX", same directory), fsyncs it and renames
  // it to path, never over an existing one (ALREADY_EXISTS: what is there stays), so that path
  // names the whole new file or nothing of it; on any failure the temporary is removed. Tensor data
  // is aligned to general.alignment (a uint32 power of two when set; 32 otherwise). before_publish,
  // when given, runs once the data is written and may still refuse it (a source that changed
  // meanwhile).
  absl::Status WriteAtomically(const std::string& path,
                               const std::function<absl::Status()>& before_publish = nullptr) const;

  size_t metadata_count() const { return entries_.size(); }
  size_t tensor_count() const { return tensors_.size(); }

 private:
  struct Entry {
    std::string key;
    uint32_t type;                 // gguf_type
    std::vector<uint8_t> encoded;  // the bytes after the type id, as GgufValue::encoded
  };
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    DType type;
    uint64_t nbytes;
    TensorProducer produce;
  };
  void Set(const std::string& key, uint32_t type, std::vector<uint8_t> encoded);
  absl::Status CheckTensor(const std::string& name, const std::vector<int64_t>& ne, DType type,
                           uint64_t* nbytes) const;
  absl::StatusOr<uint32_t> Alignment() const;
  absl::Status WriteTo(int fd, uint32_t alignment, const std::string& path) const;

  std::vector<Entry> entries_;
  std::vector<Tensor> tensors_;
};

}  // namespace superweight
