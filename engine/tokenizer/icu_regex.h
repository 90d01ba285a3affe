// ICU regexes in the dialect of the Hugging Face `tokenizers` library (Oniguruma): \s is
// White_Space (ICU's \s leaves out U+000B and U+0085), ^ and $ hold at every \n, . stops at \n.
#pragma once

#include <unicode/regex.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace superweight {

absl::StatusOr<std::unique_ptr<icu::RegexPattern>> CompileTokenizerRegex(std::string_view pattern);

// A pattern that matches `literal` and nothing else.
std::string EscapeRegexLiteral(std::string_view literal);

// Byte ranges [begin, end) of the successive matches of `matcher`'s pattern in UTF-8 `text`.
// One matcher serves many calls (ICU matchers are not thread-safe; patterns are).
void FindMatches(icu::RegexMatcher* matcher, std::string_view text,
                 std::vector<std::pair<size_t, size_t>>* matches);

}  // namespace superweight
