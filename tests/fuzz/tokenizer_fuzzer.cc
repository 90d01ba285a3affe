// libFuzzer target: encoding arbitrary bytes (invalid UTF-8 included) with a real byte-level
// and a real SentencePiece-style tokenizer, and decoding the result.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/tokenizer/tokenizer.h"

namespace {
const superweight::Tokenizer* Load(const char* path) {
  auto t = superweight::LoadHfTokenizer(path, 1, 2);
  return t.ok() ? t->release() : nullptr;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const superweight::Tokenizer* spm =
      Load(SUPERWEIGHT_TESTDATA "/hf_tinystories_656k/tokenizer.json");
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (spm != nullptr) {
    auto ids = spm->Encode(text, true);
    spm->Decode(ids);
  }
  return 0;
}
