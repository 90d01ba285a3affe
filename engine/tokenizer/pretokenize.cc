#include "engine/tokenizer/pretokenize.h"

#include <unicode/uchar.h>

#include "engine/tokenizer/utf8.h"

namespace superweight {
namespace {

struct CodePoint {
  uint32_t cp;
  size_t pos;  // byte offset
};

bool IsLetter(uint32_t cp) { return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_L_MASK) != 0; }
bool IsNumber(uint32_t cp) { return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_N_MASK) != 0; }
bool IsSpace(uint32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

}  // namespace

std::vector<std::string_view> SplitGpt2(std::string_view text) {
  std::vector<CodePoint> cps;
  for (size_t pos = 0; pos < text.size();) {
    int len;
    uint32_t cp = DecodeUtf8(text, pos, &len);
    cps.push_back({cp, pos});
    pos += len;
  }
  const size_t n = cps.size();
  auto byte_at = [&](size_t i) { return i < n ? cps[i].pos : text.size(); };
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < n) {
    size_t end = i;
    const uint32_t c = cps[i].cp;
    // Contractions.
    if (c == '\'' && i + 1 < n) {
      const uint32_t c1 = cps[i + 1].cp;
      const uint32_t c2 = i + 2 < n ? cps[i + 2].cp : 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        end = i + 2;
      } else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
        end = i + 3;
      }
    }
    if (end == i) {
      size_t j = i;
      if (c == ' ' && i + 1 < n && !IsSpace(cps[i + 1].cp)) j = i + 1;
      const uint32_t head = cps[j].cp;
      if (IsLetter(head)) {
        end = j;
        while (end < n && IsLetter(cps[end].cp)) ++end;
      } else if (IsNumber(head)) {
        end = j;
        while (end < n && IsNumber(cps[end].cp)) ++end;
      } else if (!IsSpace(head)) {
        end = j;
        while (end < n && !IsSpace(cps[end].cp) && !IsLetter(cps[end].cp) &&
               !IsNumber(cps[end].cp)) {
          ++end;
        }
      } else {
        // Whitespace: \s+(?!\S) leaves the last space for the next word, else \s+.
        size_t k = i;
        while (k < n && IsSpace(cps[k].cp)) ++k;
        end = (k == n || k - i == 1) ? k : k - 1;
      }
    }
    words.push_back(text.substr(byte_at(i), byte_at(end) - byte_at(i)));
    i = end;
  }
  return words;
}

}  // namespace superweight
