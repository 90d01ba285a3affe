// Pre-tokenizers: how text is cut into words before BPE, as the Hugging Face `tokenizers`
// components (Split, ByteLevel, Digits, Metaspace, Punctuation, Whitespace, Sequence) and
// llama.cpp's GGUF pre-tokenizer table define them. Regexes run on ICU.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace superweight {

// The GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matched by hand with Unicode categories: the same splits as the regex (a unit test checks
// it against ICU), several times faster.
std::vector<std::string_view> SplitGpt2(std::string_view text);
extern const char kGpt2Pattern[];

// A word being cut. `at_text_start` marks the piece that begins at the first byte of the text
// handed to the tokenizer (Metaspace's "first" prepend scheme looks at it).
struct Piece {
  std::string text;
  bool at_text_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Cuts (or rewrites) every piece; empty pieces are dropped.
  virtual void Apply(std::vector<Piece>* pieces) const = 0;
};

// What Split does with the matches (`tokenizers`' SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name);

// A regex in the dialect of `tokenizers` (Oniguruma: \s is White_Space, $ ends a line).
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeRegexSplit(std::string_view pattern,
                                                             SplitBehavior behavior, bool invert);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeLiteralSplit(std::string_view literal,
                                                               SplitBehavior behavior, bool invert);
// Bytes to GPT-2's printable alphabet, after the GPT-2 split when `use_regex`; with
// `add_prefix_space` every piece that does not start with a space gets one.
std::unique_ptr<PreTokenizer> MakeByteLevel(bool add_prefix_space, bool use_regex);
// The GPT-2 split alone (the hand-written matcher).
std::unique_ptr<PreTokenizer> MakeGpt2Split();
enum class PrependScheme { kAlways, kFirst, kNever };
// Spaces become `replacement`, which is prepended per `scheme` and starts each word if `split`.
std::unique_ptr<PreTokenizer> MakeMetaspace(std::string replacement, PrependScheme scheme,
                                            bool split);
std::unique_ptr<PreTokenizer> MakeSequence(std::vector<std::unique_ptr<PreTokenizer>> steps);

// The regexes llama.cpp applies, in order and each keeping its matches as words, for a GGUF
// `tokenizer.ggml.pre` of a BPE ("gpt2") vocabulary; NotFound for a value it does not know.
absl::StatusOr<std::vector<std::string>> GgufPreTokenizerRegexes(std::string_view pre);
// Every `tokenizer.ggml.pre` value GgufPreTokenizerRegexes knows (docs/tokenizers.md lists them).
std::vector<std::string> KnownGgufPreTokenizers();

// The regex splits of a GGUF pre-tokenizer, then the byte-level alphabet.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeGgufPreTokenizer(std::string_view pre);

}  // namespace superweight
