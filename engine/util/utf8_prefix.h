// Cutting text that may be UTF-8 (a name a caller sent, echoed in a message) without splitting a
// character: a message must stay valid UTF-8 (gRPC status messages, JSON).
#pragma once

#include <cstddef>

namespace superweight {

// The longest prefix of text of at most max_bytes bytes that ends on a character boundary (never
// inside a multi-byte sequence); the whole text where it fits. Text: any string or string view.
template <typename Text>
Text Utf8Prefix(const Text& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  // Continuation bytes are 10xxxxxx: back up to the lead byte of the character cut through.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut);
}

}  // namespace superweight
