#include "engine/tokenizer/icu_regex.h"

#include <unicode/utext.h>

#include "absl/strings/str_format.h"
#include "engine/tokenizer/utf8.h"
#include "engine/util/utf8_prefix.h"

namespace superweight {

absl::StatusOr<std::unique_ptr<icu::RegexPattern>> CompileTokenizerRegex(std::string_view pattern) {
  std::string icu_pattern;
  icu_pattern.reserve(pattern.size() + 16);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        icu_pattern += "\\p{White_Space}";
      } else if (next == 'S') {
        icu_pattern += "\\P{White_Space}";
      } else {
        icu_pattern += '\\';
        icu_pattern += next;
      }
      continue;
    }
    icu_pattern += pattern[i];
  }
  UErrorCode status = U_ZERO_ERROR;
  UParseError where{};
  std::unique_ptr<icu::RegexPattern> compiled(
      icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(icu_pattern),
                                 UREGEX_MULTILINE | UREGEX_UNIX_LINES, where, status));
  if (U_FAILURE(status)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("regex '%s' does not compile (%s at offset %d)", Utf8Prefix(pattern, 200),
                        u_errorName(status), where.offset));
  }
  return compiled;
}

std::string EscapeRegexLiteral(std::string_view literal) {
  std::string pattern;
  for (size_t pos = 0; pos < literal.size();) {
    int len;
    const uint32_t cp = DecodeUtf8(literal, pos, &len);
    pattern += absl::StrFormat("\\x{%X}", cp);
    pos += len;
  }
  return pattern;
}

void FindMatches(icu::RegexMatcher* matcher, std::string_view text,
                 std::vector<std::pair<size_t, size_t>>* matches) {
  UErrorCode status = U_ZERO_ERROR;
  UText utext = UTEXT_INITIALIZER;
  // Matching the UTF-8 bytes in place: ICU's native indices are then byte offsets.
  utext_openUTF8(&utext, text.data(), static_cast<int64_t>(text.size()), &status);
  matcher->reset(&utext);
  while (U_SUCCESS(status) && matcher->find(status)) {
    const int64_t begin = matcher->start64(status);
    const int64_t end = matcher->end64(status);
    if (U_FAILURE(status)) break;
    matches->push_back({static_cast<size_t>(begin), static_cast<size_t>(end)});
  }
  utext_close(&utext);  // the matcher keeps its own shallow clone, used no more
}

}  // namespace superweight
