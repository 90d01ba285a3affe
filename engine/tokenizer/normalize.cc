#include "engine/tokenizer/normalize.h"

#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/icu_regex.h"
#include "engine/tokenizer/utf8.h"

namespace superweight {
namespace {

class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(const icu::Normalizer2* normalizer) : normalizer_(normalizer) {}
  std::string Apply(std::string_view text) const override {
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
    UErrorCode status = U_ZERO_ERROR;
    normalizer_->normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())),
                               sink, nullptr, status);
    return U_SUCCESS(status) ? out : std::string(text);
  }

  // Composition (Hangul jamo: 9 bytes to 3) and compatibility folds (a 4-byte mathematical
  // letter to 1 byte) shrink at most 4 to 1.
  double MaxShrink() const override { return 4; }

 private:
  const icu::Normalizer2* normalizer_;  // ICU's singleton
};

// Each code point by its full lowercase mapping (İ -> i + U+0307), without context: as
// `tokenizers` does it, so Σ at the end of a word becomes σ, not ς.
class Lowercase : public Normalizer {
 public:
  std::string Apply(std::string_view text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      int len;
      const uint32_t cp = DecodeUtf8(text, pos, &len);
      if (cp < 0x80) {
        out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + ('a' - 'A') : cp));
      } else if (len == 1) {
        out.push_back(text[pos]);  // a byte of invalid UTF-8 stays as it is
      } else {
        icu::UnicodeString c(static_cast<UChar32>(cp));
        c.toLower(icu::Locale::getRoot());
        c.toUTF8String(out);
      }
      pos += len;
    }
    return out;
  }

  // The Kelvin sign (3 bytes) becomes k (1 byte); 4 bounds every mapping.
  double MaxShrink() const override { return 4; }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string Apply(std::string_view text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        int len;
        if (!u_isUWhiteSpace(static_cast<UChar32>(DecodeUtf8(text, begin, &len)))) break;
        begin += len;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;  // back to the start of the last code point
        while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
        int len;
        const uint32_t cp = DecodeUtf8(text, start, &len);
        if (start + len != end || !u_isUWhiteSpace(static_cast<UChar32>(cp))) break;
        end = start;
      }
    }
    return std::string(text.substr(begin, end - begin));
  }

  double MaxShrink() const override { return 0; }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  std::string Apply(std::string_view text) const override {
    std::string out;
    for (size_t pos = 0; pos < text.size();) {
      int len;
      const uint32_t cp = DecodeUtf8(text, pos, &len);
      if ((U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_M_MASK) == 0) {
        out.append(text.substr(pos, len));
      }
      pos += len;
    }
    return out;
  }

  double MaxShrink() const override { return 0; }
};

class Replace : public Normalizer {
 public:
  Replace(std::unique_ptr<icu::RegexPattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Apply(std::string_view text) const override {
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> matcher(pattern_->matcher(status));
    if (U_FAILURE(status)) return std::string(text);
    std::vector<std::pair<size_t, size_t>> matches;
    FindMatches(matcher.get(), text, &matches);
    std::string out;
    size_t previous = 0;
    for (const auto& [begin, end] : matches) {
      out.append(text.substr(previous, begin - previous));
      out += content_;
      previous = end;
    }
    out.append(text.substr(previous));
    return out;
  }

  double MaxShrink() const override { return 0; }  // a match may be any length

 private:
  std::unique_ptr<icu::RegexPattern> pattern_;
  std::string content_;
};

class LiteralReplace : public Normalizer {
 public:
  LiteralReplace(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Apply(std::string_view text) const override {
    return absl::StrReplaceAll(absl::string_view(text.data(), text.size()), {{pattern_, content_}});
  }

  double MaxShrink() const override {
    if (content_.empty()) return pattern_.empty() ? 1 : 0;
    return std::max(1.0, static_cast<double>(pattern_.size()) / content_.size());
  }

 private:
  std::string pattern_, content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Apply(std::string_view text) const override {
    return text.empty() ? std::string() : prefix_ + std::string(text);
  }

  double MaxShrink() const override { return 1; }

 private:
  std::string prefix_;
};

class NormalizerSequence : public Normalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  std::string Apply(std::string_view text) const override {
    std::string s(text);
    for (const auto& step : steps_) s = step->Apply(s);
    return s;
  }

  double MaxShrink() const override {
    double product = 1;
    for (const auto& step : steps_) product *= step->MaxShrink();
    return product;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeUnicodeNormalizer(std::string_view form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (form == "NFC") n = icu::Normalizer2::getNFCInstance(status);
  if (form == "NFD") n = icu::Normalizer2::getNFDInstance(status);
  if (form == "NFKC") n = icu::Normalizer2::getNFKCInstance(status);
  if (form == "NFKD") n = icu::Normalizer2::getNFKDInstance(status);
  if (n == nullptr || U_FAILURE(status)) {
    return absl::UnimplementedError(absl::StrFormat("unknown Unicode normal form '%s'", form));
  }
  return std::make_unique<UnicodeForm>(n);
}

std::unique_ptr<Normalizer> MakeLowercase() { return std::make_unique<Lowercase>(); }

std::unique_ptr<Normalizer> MakeStrip(bool left, bool right) {
  return std::make_unique<Strip>(left, right);
}

std::unique_ptr<Normalizer> MakeStripAccents() { return std::make_unique<StripAccents>(); }

absl::StatusOr<std::unique_ptr<Normalizer>> MakeReplace(std::string_view pattern, bool is_regex,
                                                        std::string content) {
  if (!is_regex) {
    if (pattern.empty()) return absl::InvalidArgumentError("Replace with an empty pattern");
    return std::make_unique<LiteralReplace>(std::string(pattern), std::move(content));
  }
  auto compiled = CompileTokenizerRegex(pattern);
  if (!compiled.ok()) return compiled.status();
  return std::make_unique<Replace>(std::move(*compiled), std::move(content));
}

std::unique_ptr<Normalizer> MakePrepend(std::string prefix) {
  return std::make_unique<Prepend>(std::move(prefix));
}

std::unique_ptr<Normalizer> MakeNormalizerSequence(std::vector<std::unique_ptr<Normalizer>> steps) {
  return std::make_unique<NormalizerSequence>(std::move(steps));
}

}  // namespace superweight
