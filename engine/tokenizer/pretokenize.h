// Pre-tokenizers: how text is cut into words before BPE.
#pragma once

#include <string_view>
#include <vector>

namespace superweight {

// The GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matched by hand with Unicode categories, as the `tokenizers` ByteLevel pre-tokenizer does.
std::vector<std::string_view> SplitGpt2(std::string_view text);

}  // namespace superweight
