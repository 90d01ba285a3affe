// libFuzzer target: GGUF bytes through everything that reads them. The reader over arbitrary
// bytes (each tensor's bytes must lie inside the input and be what its type and shape need); the
// tokenizer a GGUF carries, from the parsed file as the model loader takes it; and a file with
// tensors opened as a model from disk, as the registry opens a .gguf. Anything but a clean Status
// is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/formats/gguf.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/scratch_dir.h"

namespace superweight {
namespace {

constexpr std::string_view kText = "Hello world, 123 ünïcödé <s> </s>\n\tend";

void CheckTensors(const GgufFile& file, const uint8_t* begin, const uint8_t* end) {
  volatile uint8_t sink = 0;
  for (const auto& [name, t] : file.tensors) {
    unsigned __int128 numel = 1;  // 128 bits: a count the reader wrapped around shows
    for (int64_t d : t.ne) {
      if (d < 0) abort();
      numel *= static_cast<uint64_t>(d);
      if (numel > (uint64_t{1} << 60)) abort();  // the reader caps tensors at 2^50
    }
    auto expected = StorageBytes(t.dtype, static_cast<uint64_t>(numel));
    if (!expected.ok() || *expected != t.nbytes) abort();
    if (t.data < begin || t.nbytes > static_cast<uint64_t>(end - t.data)) abort();
    if (t.nbytes > 0) sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
  }
  (void)sink;
}

void CheckTokenizer(const Tokenizer& t, int vocab, bool add_bos) {
  const std::vector<int32_t> ids = t.Encode(kText, add_bos, /*parse_special=*/true);
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) abort();
  }
  t.Decode(ids);
}

void Exercise(const uint8_t* data, size_t size) {
  auto file = ParseGguf({data, size}, "fuzz.gguf");
  if (!file.ok()) return;
  CheckTensors(*file, data, data + size);
  if (auto tokenizer = LoadGgufTokenizer(*file, "fuzz.gguf"); tokenizer.ok()) {
    CheckTokenizer(**tokenizer, (*tokenizer)->vocab_size(), (*tokenizer)->add_bos());
  }
  if (file->tensors.empty()) return;  // a vocabulary, not a model
  static const fuzz::ScratchDir scratch("gguf-fuzzer");
  const std::string path = (scratch.path() / "model.gguf").string();
  fuzz::ScratchDir::WriteFile(path, {reinterpret_cast<const char*>(data), size});
  auto model = OpenModel(path);
  if (model.ok() && (*model)->tokenizer != nullptr) {
    CheckTokenizer(*(*model)->tokenizer, (*model)->config.vocab, (*model)->config.add_bos);
  }
}

}  // namespace
}  // namespace superweight

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  superweight::Exercise(data, size);
  return 0;
}
