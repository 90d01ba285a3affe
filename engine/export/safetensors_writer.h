// Writer of safetensors files for exports: an 8-byte little-endian header length, a JSON header
// (dtype, shape, data_offsets per tensor, "__metadata__": {"format": "pt"}) padded with spaces
// to a multiple of 8 bytes, then the tensors' bytes in header order. Tensors are produced a row
// at a time while the file is written, so a model is never whole in memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/formats/dtype.h"

namespace superweight {

// f32 to bf16 bits, rounded to nearest even, NaN kept a (quiet) NaN of the same sign, and
// subnormals kept (rounded like any value): what torch's float32 -> bfloat16 conversion gives,
// so that a bf16 export holds exactly what loading the f32 export and calling .bfloat16() would.
// (The engine's FloatToBFloat16 flushes subnormals to zero, as its AVX512-BF16 kernels do.)
uint16_t FloatToBFloat16ForExport(float value);

class SafetensorsWriter {
 public:
  // Fills row `row` of a tensor as f32: shape.back() values (one row for a 1-D tensor).
  using RowSource = std::function<void(int64_t row, float* values)>;

  // Every tensor is stored as dtype, which must be kF32 or kBF16 (Write refuses others).
  explicit SafetensorsWriter(DType dtype) : dtype_(dtype) {}

  // A 1-D or 2-D tensor. INVALID_ARGUMENT for an empty or repeated name, another rank or a
  // negative dimension. rows is called during Write, once per row, in order.
  absl::Status AddTensor(const std::string& name, std::vector<int64_t> shape, RowSource rows);

  // Creates path (which must not exist) and writes every tensor, sorted by name, then fsyncs it.
  // On failure the partial file is left for the caller, who writes into a temporary directory.
  // CANCELLED once `cancelled` is set (checked every row).
  absl::Status Write(const std::string& path, const std::atomic<bool>* cancelled = nullptr) const;

  size_t tensor_count() const { return tensors_.size(); }

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    RowSource rows;
  };
  DType dtype_;
  std::vector<Tensor> tensors_;
};

}  // namespace superweight
