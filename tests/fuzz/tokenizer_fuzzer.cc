// libFuzzer target: encoding arbitrary bytes (invalid UTF-8 included) with real tokenizers of
// each kind: SentencePiece-style from tokenizer.json, byte-level with the hand-written GPT-2
// split (GGUF gpt-2), byte-level with ICU regexes and a user-defined token (GGUF deepseek-llm),
// SentencePiece from GGUF (llama-spm); both entry points, and decoding the result.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace {
const superweight::Tokenizer* Keep(absl::StatusOr<std::unique_ptr<superweight::Tokenizer>> t) {
  return t.ok() ? t->release() : nullptr;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<const superweight::Tokenizer*> tokenizers = {
      Keep(superweight::LoadHfTokenizer(SUPERWEIGHT_TESTDATA "/hf_tinystories_656k/tokenizer.json",
                                        1, 2)),
      Keep(superweight::LoadGgufTokenizerFile(SUPERWEIGHT_TESTDATA "/vocab/ggml-vocab-gpt-2.gguf")),
      Keep(superweight::LoadGgufTokenizerFile(SUPERWEIGHT_TESTDATA
                                              "/vocab/ggml-vocab-deepseek-llm.gguf")),
      Keep(superweight::LoadGgufTokenizerFile(SUPERWEIGHT_TESTDATA
                                              "/vocab/ggml-vocab-llama-spm.gguf")),
  };
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const superweight::Tokenizer* t : tokenizers) {
    if (t == nullptr) continue;
    auto ids = t->Encode(text, true, /*parse_special=*/size % 2 == 1);
    t->Decode(ids);
    superweight::EncodeOptions options;
    options.parse_special = true;
    if (auto checked = t->Tokenize(text, options); checked.ok()) t->Decode(*checked);
  }
  return 0;
}
