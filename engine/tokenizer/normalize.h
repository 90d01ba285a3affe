// Normalizers: how text is rewritten before it is split, as the Hugging Face `tokenizers`
// components (NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend,
// Sequence) define them. Unicode forms and case come from ICU.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace superweight {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Apply(std::string_view text) const = 0;
  // At most how many bytes of input one byte of output stands for, whatever the text; 0 where
  // there is no such bound (text may be removed: Strip, StripAccents, a regex Replace).
  virtual double MaxShrink() const = 0;
};

// "NFC", "NFD", "NFKC" or "NFKD".
absl::StatusOr<std::unique_ptr<Normalizer>> MakeUnicodeNormalizer(std::string_view form);
// Full Unicode lowercase mapping of each code point, without context (a final Σ becomes σ).
std::unique_ptr<Normalizer> MakeLowercase();
// Removes White_Space at either end.
std::unique_ptr<Normalizer> MakeStrip(bool left, bool right);
// Removes combining marks (general category M).
std::unique_ptr<Normalizer> MakeStripAccents();
// Every match of `pattern` (a regex, or a literal when !is_regex) becomes `content`.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeReplace(std::string_view pattern, bool is_regex,
                                                        std::string content);
// `prefix` before any non-empty text.
std::unique_ptr<Normalizer> MakePrepend(std::string prefix);
std::unique_ptr<Normalizer> MakeNormalizerSequence(std::vector<std::unique_ptr<Normalizer>> steps);

}  // namespace superweight
