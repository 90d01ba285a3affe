#include "engine/tokenizer/decode.h"

#include <unicode/regex.h>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <utility>

#include "absl/strings/str_replace.h"
#include "engine/tokenizer/icu_regex.h"
#include "engine/tokenizer/utf8.h"

namespace superweight {
namespace {

constexpr char kReplacementCharacter[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed UTF-8 sequence at `pos`, or 0 with `*subpart` set to the length of
// its longest valid prefix (Unicode's "maximal subpart", which one U+FFFD replaces).
size_t ValidSequenceLength(std::string_view s, size_t pos, size_t* subpart) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t lead = byte(pos);
  *subpart = 1;
  if (lead < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    if (pos + k >= s.size()) return 0;
    const uint8_t b = byte(pos + k);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return 0;
    *subpart = k + 1;
  }
  return need;
}

class ByteLevelDecoder : public Decoder {
 public:
  ByteLevelDecoder() {
    std::fill(std::begin(char_to_byte_), std::end(char_to_byte_), -1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      char_to_byte_[printable ? b : 256 + next++] = static_cast<int16_t>(b);
    }
  }
  void Apply(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      std::string mapped;
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size() && all_mapped;) {
        int len;
        const uint32_t cp = DecodeUtf8(token, pos, &len);
        all_mapped = cp < 324 && char_to_byte_[cp] >= 0;
        if (all_mapped) mapped.push_back(static_cast<char>(char_to_byte_[cp]));
        pos += len;
      }
      bytes += all_mapped ? mapped : token;
    }
    *tokens = {Utf8Lossy(bytes)};
  }

 private:
  int16_t char_to_byte_[324];  // -1 outside the alphabet, which ends at U+0143
};

class ByteFallbackDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t byte_tokens = 0;
    auto flush = [&] {
      if (byte_tokens == 0) return;
      size_t bad;
      if (IsValidUtf8(bytes, &bad)) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < byte_tokens; ++i) out.push_back(kReplacementCharacter);
      }
      bytes.clear();
      byte_tokens = 0;
    };
    for (std::string& token : *tokens) {
      unsigned value;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' &&
          std::sscanf(token.c_str() + 3, "%2X", &value) == 1 && IsHex(token[3]) &&
          IsHex(token[4])) {
        bytes.push_back(static_cast<char>(value));
        ++byte_tokens;
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static bool IsHex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
  }
};

class FuseDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    *tokens = {all};
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<icu::RegexPattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::vector<std::string>* tokens) const override {
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> matcher(pattern_->matcher(status));
    if (U_FAILURE(status)) return;
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& token : *tokens) {
      matches.clear();
      FindMatches(matcher.get(), token, &matches);
      if (matches.empty()) continue;
      std::string out;
      size_t previous = 0;
      for (const auto& [begin, end] : matches) {
        out.append(token, previous, begin - previous);
        out += content_;
        previous = end;
      }
      out.append(token, previous, std::string::npos);
      token = std::move(out);
    }
  }

 private:
  std::unique_ptr<icu::RegexPattern> pattern_;
  std::string content_;
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Apply(std::vector<std::string>* tokens) const override {
    if (content_.empty()) return;
    const size_t n = content_.size();
    for (std::string& token : *tokens) {
      size_t begin = 0, end = token.size();
      for (int i = 0; i < start_ && end - begin >= n && token.compare(begin, n, content_) == 0;
           ++i) {
        begin += n;
      }
      for (int i = 0; i < stop_ && end - begin >= n && token.compare(end - n, n, content_) == 0;
           ++i) {
        end -= n;
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepend_never)
      : replacement_(std::move(replacement)), prepend_never_(prepend_never) {}
  void Apply(std::vector<std::string>* tokens) const override {
    if (replacement_.empty()) return;
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] =
          absl::StrReplaceAll((*tokens)[i], {{replacement_, i == 0 && !prepend_never_ ? "" : " "}});
    }
  }

 private:
  std::string replacement_;
  bool prepend_never_;
};

class DecoderSequence : public Decoder {
 public:
  explicit DecoderSequence(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->Apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    size_t subpart;
    const size_t len = ValidSequenceLength(bytes, pos, &subpart);
    if (len > 0) {
      out.append(bytes.substr(pos, len));
      pos += len;
    } else {
      out += kReplacementCharacter;
      pos += subpart;
    }
  }
  return out;
}

bool IsValidUtf8(std::string_view text, size_t* bad_offset) {
  for (size_t pos = 0; pos < text.size();) {
    size_t subpart;
    const size_t len = ValidSequenceLength(text, pos, &subpart);
    if (len == 0) {
      *bad_offset = pos;
      return false;
    }
    pos += len;
  }
  return true;
}

std::unique_ptr<Decoder> MakeByteLevelDecoder() { return std::make_unique<ByteLevelDecoder>(); }
std::unique_ptr<Decoder> MakeByteFallbackDecoder() {
  return std::make_unique<ByteFallbackDecoder>();
}
std::unique_ptr<Decoder> MakeFuseDecoder() { return std::make_unique<FuseDecoder>(); }

absl::StatusOr<std::unique_ptr<Decoder>> MakeReplaceDecoder(std::string_view pattern, bool is_regex,
                                                            std::string content) {
  if (pattern.empty()) return absl::InvalidArgumentError("Replace with an empty pattern");
  auto compiled =
      CompileTokenizerRegex(is_regex ? std::string(pattern) : EscapeRegexLiteral(pattern));
  if (!compiled.ok()) return compiled.status();
  return std::make_unique<ReplaceDecoder>(std::move(*compiled), std::move(content));
}

std::unique_ptr<Decoder> MakeStripDecoder(std::string content, int start, int stop) {
  return std::make_unique<StripDecoder>(std::move(content), start, stop);
}

std::unique_ptr<Decoder> MakeMetaspaceDecoder(std::string replacement, bool prepend_never) {
  return std::make_unique<MetaspaceDecoder>(std::move(replacement), prepend_never);
}

std::unique_ptr<Decoder> MakeDecoderSequence(std::vector<std::unique_ptr<Decoder>> steps) {
  return std::make_unique<DecoderSequence>(std::move(steps));
}

}  // namespace superweight
