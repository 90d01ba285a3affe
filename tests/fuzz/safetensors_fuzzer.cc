// libFuzzer target: the safetensors reader. Each input is read twice: as a file, bytes as they
// are; and as `header JSON \0 data`, made into a file whose 8-byte header length is right, so
// that mutations which lengthen or shorten the JSON still reach the tensors' checks. A tensor the
// reader accepts lies inside the file and holds exactly the bytes its dtype and shape need.
// Anything but a clean Status is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/types/span.h"
#include "engine/formats/safetensors.h"

namespace superweight {
namespace {

void Exercise(absl::Span<const uint8_t> file) {
  auto parsed = ParseSafetensors(file, "fuzz.safetensors");
  if (!parsed.ok()) return;
  volatile uint8_t sink = 0;
  for (const auto& [name, t] : parsed->tensors) {
    // Counted in 128 bits, so that a count the reader wrapped around shows.
    unsigned __int128 bytes = Traits(t.dtype).block_bytes;
    for (int64_t d : t.shape) {
      if (d < 0) abort();
      if (d == 0) bytes = 0;
    }
    for (int64_t d : t.shape) {
      if (bytes > file.size()) abort();  // more than the file holds (each factor is at least 1)
      bytes *= static_cast<uint64_t>(d);
    }
    if (bytes != t.nbytes) abort();
    if (t.data < file.data() || t.nbytes > static_cast<uint64_t>(file.end() - t.data)) abort();
    if (t.nbytes > 0) sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
  }
  (void)sink;
}

}  // namespace
}  // namespace superweight

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  superweight::Exercise({data, size});
  const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  if (nul != nullptr) {
    const uint64_t header = nul - data;
    std::vector<uint8_t> file(8 + size - 1);
    std::memcpy(file.data(), &header, 8);
    std::memcpy(file.data() + 8, data, header);
    std::memcpy(file.data() + 8 + header, nul + 1, size - header - 1);
    superweight::Exercise(file);
  }
  return 0;
}
