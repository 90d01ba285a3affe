// Byte-pair-encoding tokenizers of the two families LLMs use:
//  - SentencePiece style: spaces become U+2581, merges by rank or by piece score, unknown
//    characters fall back to <0xXX> byte tokens (Llama 2, TinyStories, llama2.c, GGUF "llama").
//  - byte-level: text is split by the GPT-2 regex, bytes are mapped to printable characters,
//    merges by rank (GPT-2, SmolLM2, GGUF "gpt2").
// Built from tokenizer.json, GGUF metadata or a llama2.c tokenizer.bin by the functions below.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace superweight {

struct TokenizerSpec {
  enum class Mode { kSentencePiece, kByteLevel } mode = Mode::kSentencePiece;
  enum class PreTokenizer { kNone, kGpt2Regex, kMetaspaceSplit } pre = PreTokenizer::kNone;
  std::vector<std::string> pieces;  // id -> piece
  // Merge priority: either explicit merges (lower index merges first) or, when empty, the
  // score of the merged piece (higher merges first).
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<float> scores;
  bool byte_fallback = false;
  int unk_id = -1;
  // SentencePiece normalisation: prepend U+2581 to the text, and turn spaces into U+2581.
  bool prepend_space_marker = false;
  bool spaces_to_marker = false;
  // Metaspace's rule: no marker is prepended to text that already starts with a space.
  bool prepend_unless_leading_space = false;
  bool split_digits = false;  // isolate every digit before the regex (Digits pre-tokenizer)
  std::vector<std::pair<std::string, int>> added_tokens;  // matched literally before BPE
  int bos_id = -1;
  int eos_id = -1;
};

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerSpec spec);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;
  std::string Decode(absl::Span<const int32_t> ids) const;
  int vocab_size() const { return static_cast<int>(spec_.pieces.size()); }
  int bos_id() const { return spec_.bos_id; }
  int eos_id() const { return spec_.eos_id; }
  const std::string& piece(int id) const { return spec_.pieces[id]; }

 private:
  explicit Tokenizer(TokenizerSpec spec) : spec_(std::move(spec)) {}
  void EncodeSegment(std::string_view segment, std::vector<int32_t>* out) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  // Whether (left, right) merges; lower priority merges first.
  bool MergePriority(int left, int right, float* priority, int* merged) const;

  TokenizerSpec spec_;
  std::unordered_map<std::string, int> piece_to_id_;
  // (left id, right id) -> (rank, merged id), for explicit merges.
  std::unordered_map<uint64_t, std::pair<int, int>> merge_ranks_;
  int byte_token_[256];            // <0xXX> ids for byte fallback, -1 where missing
  std::string byte_to_char_[256];  // byte-level alphabet
  std::unordered_map<uint32_t, uint8_t> char_to_byte_;
};

// Loaders (tokenizer/loaders.cc).
class GgufFile;
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& tokenizer_json_path,
                                                           int bos_id, int eos_id);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const GgufFile& gguf,
                                                             const std::string& name);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path,
                                                                int vocab_size);

}  // namespace superweight
