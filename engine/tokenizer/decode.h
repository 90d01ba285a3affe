// Decoders: how token pieces turn back into text, as the Hugging Face `tokenizers` components
// (ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence) define them: each step
// rewrites the list of token strings, and the result is their concatenation.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace superweight {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>* tokens) const = 0;
};

// GPT-2's byte alphabet back to bytes (a token with a character outside it is kept as it is);
// the bytes of all tokens are then read as UTF-8, an invalid sequence as U+FFFD.
std::unique_ptr<Decoder> MakeByteLevelDecoder();
// Runs of <0xXX> tokens become their bytes if those are valid UTF-8, else one U+FFFD each.
std::unique_ptr<Decoder> MakeByteFallbackDecoder();
// All tokens into one.
std::unique_ptr<Decoder> MakeFuseDecoder();
absl::StatusOr<std::unique_ptr<Decoder>> MakeReplaceDecoder(std::string_view pattern, bool is_regex,
                                                            std::string content);
// Removes up to `start` leading and `stop` trailing `content` characters from every token.
std::unique_ptr<Decoder> MakeStripDecoder(std::string content, int start, int stop);
// `replacement` becomes a space; in the first token it is dropped unless `prepend_never`.
std::unique_ptr<Decoder> MakeMetaspaceDecoder(std::string replacement, bool prepend_never);
std::unique_ptr<Decoder> MakeDecoderSequence(std::vector<std::unique_ptr<Decoder>> steps);

// Text with every invalid UTF-8 sequence replaced by U+FFFD (as Rust's from_utf8_lossy).
std::string Utf8Lossy(std::string_view bytes);
// Whether `text` is well-formed UTF-8; if not, the byte offset of the first bad sequence.
bool IsValidUtf8(std::string_view text, size_t* bad_offset);

}  // namespace superweight
