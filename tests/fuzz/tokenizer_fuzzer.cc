// libFuzzer target: encoding arbitrary bytes (invalid UTF-8 included) with real tokenizers of
// each kind: SentencePiece-style from tokenizer.json, byte-level with the hand-written GPT-2
// split (GGUF gpt-2), byte-level with ICU regexes and a user-defined token (GGUF deepseek-llm),
// SentencePiece from GGUF (llama-spm); both entry points, and decoding the result.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace {

// Loaded once and never freed: held through a global pointer, so LeakSanitizer sees them
// reachable at exit (a static vector of them would be destroyed first and leave them orphaned).
const std::vector<std::unique_ptr<superweight::Tokenizer>>& Tokenizers() {
  static const auto* tokenizers = [] {
    auto* all = new std::vector<std::unique_ptr<superweight::Tokenizer>>;
    auto add = [&](absl::StatusOr<std::unique_ptr<superweight::Tokenizer>> t) {
      if (!t.ok()) abort();  // testdata's tokenizers load, or the fuzzer tests nothing
      all->push_back(std::move(*t));
    };
    add(superweight::LoadHfTokenizer(SUPERWEIGHT_TESTDATA "/hf_tinystories_656k/tokenizer.json", 1,
                                     2));
    for (const char* vocab : {"gpt-2", "deepseek-llm", "llama-spm"}) {
      add(superweight::LoadGgufTokenizerFile(std::string(SUPERWEIGHT_TESTDATA) +
                                             "/vocab/ggml-vocab-" + vocab + ".gguf"));
    }
    return all;
  }();
  return *tokenizers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& t : Tokenizers()) {
    auto ids = t->Encode(text, true, /*parse_special=*/size % 2 == 1);
    t->Decode(ids);
    superweight::EncodeOptions options;
    options.parse_special = true;
    if (auto checked = t->Tokenize(text, options); checked.ok()) t->Decode(*checked);
  }
  return 0;
}
