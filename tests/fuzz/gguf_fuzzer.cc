// libFuzzer target: the GGUF reader over arbitrary bytes. Anything but a clean Status is a bug.
#include <cstddef>
#include <cstdint>

#include "engine/formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = superweight::ParseGguf({data, size}, "fuzz.gguf");
  if (file.ok()) {
    // Touch every tensor's bytes: the reader promised they are inside the input.
    volatile uint8_t sink = 0;
    for (const auto& [name, t] : file->tensors) {
      if (t.nbytes > 0) sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
    }
    (void)sink;
  }
  return 0;
}
