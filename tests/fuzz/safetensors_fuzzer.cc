// libFuzzer target: the safetensors reader over arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "engine/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = superweight::ParseSafetensors({data, size}, "fuzz.safetensors");
  if (file.ok()) {
    volatile uint8_t sink = 0;
    for (const auto& [name, t] : file->tensors) {
      if (t.nbytes > 0) sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
    }
    (void)sink;
  }
  return 0;
}
