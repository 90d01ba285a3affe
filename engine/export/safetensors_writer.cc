#include "engine/export/safetensors_writer.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_format.h"
#include "engine/export/output_file.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

// Safetensors is little-endian; rows are appended as they lie in memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);

int64_t RowsOf(const std::vector<int64_t>& shape) { return shape.size() == 1 ? 1 : shape[0]; }
int64_t ColsOf(const std::vector<int64_t>& shape) { return shape.back(); }

}  // namespace

uint16_t FloatToBFloat16ForExport(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    // Rounding could carry a NaN's low payload bits into infinity; keep its top bits, quieted.
    return static_cast<uint16_t>((bits >> 16) | 0x40u);
  }
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

absl::Status SafetensorsWriter::AddTensor(const std::string& name, std::vector<int64_t> shape,
                                          RowSource rows) {
  if (name.empty() || name == "__metadata__") {
    return absl::InvalidArgumentError(absl::StrFormat("bad tensor name '%s'", name));
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor '%s' added twice", name));
    }
  }
  if (shape.empty() || shape.size() > 2 ||
      std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; })) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s': only 1-D and 2-D shapes are written", name));
  }
  if (!rows) return absl::InvalidArgumentError(absl::StrFormat("tensor '%s': no rows", name));
  tensors_.push_back({name, std::move(shape), std::move(rows)});
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Write(const std::string& path,
                                      const std::atomic<bool>* cancelled) const {
  if (dtype_ != DType::kF32 && dtype_ != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("safetensors export stores F32 or BF16, not %s", DTypeName(dtype_)));
  }
  const uint64_t element_bytes = dtype_ == DType::kF32 ? 4 : 2;
  std::vector<const Tensor*> ordered;
  for (const Tensor& t : tensors_) ordered.push_back(&t);
  std::sort(ordered.begin(), ordered.end(),
            [](const Tensor* a, const Tensor* b) { return a->name < b->name; });

  std::string header;
  try {
    // ordered_json keeps "__metadata__" first and the tensors in the order their data follows.
    nlohmann::ordered_json json = nlohmann::ordered_json::object();
    json["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const Tensor* t : ordered) {
      const uint64_t bytes =
          static_cast<uint64_t>(RowsOf(t->shape)) * ColsOf(t->shape) * element_bytes;
      json[t->name] = {{"dtype", dtype_ == DType::kF32 ? "F32" : "BF16"},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    header = json.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: header: %s", path, e.what()));
  }
  // Spaces are JSON whitespace; readers expect the data to start 8-byte aligned.
  header.resize((header.size() + 7) / 8 * 8, ' ');

  auto file = OutputFile::Create(path);
  if (!file.ok()) return file.status();
  const uint64_t header_length = header.size();
  uint8_t length_bytes[8];
  std::memcpy(length_bytes, &header_length, sizeof(length_bytes));
  if (auto s = (*file)->Append(absl::Span<const uint8_t>(length_bytes, 8)); !s.ok()) return s;
  if (auto s = (*file)->Append(header); !s.ok()) return s;

  std::vector<float> row;
  std::vector<uint16_t> row_bf16;
  for (const Tensor* t : ordered) {
    const int64_t rows = RowsOf(t->shape), cols = ColsOf(t->shape);
    row.resize(cols);
    row_bf16.resize(cols);
    for (int64_t r = 0; r < rows; ++r) {
      if (cancelled != nullptr && cancelled->load(std::memory_order_relaxed)) {
        return absl::CancelledError("cancelled");
      }
      t->rows(r, row.data());
      const uint8_t* bytes = reinterpret_cast<const uint8_t*>(row.data());
      if (dtype_ == DType::kBF16) {
        for (int64_t c = 0; c < cols; ++c) row_bf16[c] = FloatToBFloat16ForExport(row[c]);
        bytes = reinterpret_cast<const uint8_t*>(row_bf16.data());
      }
      if (auto s = (*file)->Append(absl::Span<const uint8_t>(bytes, cols * element_bytes));
          !s.ok()) {
        return s;
      }
    }
  }
  return (*file)->Finish();
}

}  // namespace superweight
