// Byte-pair-encoding tokenizers as Hugging Face `tokenizers` and llama.cpp run them:
//   text -> added tokens cut out -> normalizer -> pre-tokenizer (words) -> BPE per word -> ids
//   ids -> pieces -> decoder -> text
// The BPE model merges by rank (explicit merges) or by the score of the merged piece
// (SentencePiece vocabularies), with byte fallback to <0xXX> pieces. The normalizer,
// pre-tokenizer and decoder are the components of normalize.h, pretokenize.h and decode.h.
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
#include "engine/tokenizer/decode.h"
#include "engine/tokenizer/normalize.h"
#include "engine/tokenizer/pretokenize.h"

namespace superweight {

// A piece matched literally in the text before anything else runs.
struct AddedToken {
  std::string content;
  int id = -1;
  // Special (control) tokens are matched only when the caller asks for it (parse_special):
  // user text that happens to contain "<|im_end|>" is text.
  bool special = true;
  // Matched in the normalized text by its normalized form, instead of in the raw text.
  bool normalized = false;
  bool lstrip = false;       // takes the whitespace before it
  bool rstrip = false;       // takes the whitespace after it
  bool single_word = false;  // only where no letter, digit or '_' touches it
};

struct TokenizerSpec {
  std::vector<std::string> pieces;  // id -> piece
  // Merge priority: either explicit merges (lower index merges first) or, when empty, the
  // score of the merged piece (higher merges first).
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<float> scores;
  bool byte_fallback = false;
  bool fuse_unk = false;       // consecutive unknown characters give one unknown token
  bool ignore_merges = false;  // a word that is a piece is taken whole (Llama 3)
  int unk_id = -1;
  std::shared_ptr<const Normalizer> normalizer;       // none: text as it is
  std::shared_ptr<const PreTokenizer> pre_tokenizer;  // none: each segment is one word
  std::shared_ptr<const Decoder> decoder;             // none: pieces joined
  bool join_decoded_with_spaces = false;  // `tokenizers` without a decoder joins with spaces
  // llama.cpp's detokenizer: added tokens give their text as it is (not through the decoder),
  // and one space is dropped from the front of the first token when `strip_first_space`.
  bool decode_added_tokens_raw = false;
  bool strip_first_space = false;
  std::vector<AddedToken> added_tokens;
  int bos_id = -1;
  int eos_id = -1;
  bool add_bos = false;  // what the file asks for when special tokens are added
  bool add_eos = false;
};

struct EncodeOptions {
  bool add_bos = false;
  bool add_eos = false;
  bool parse_special = false;  // special tokens written in the text become their ids
  // Tokenize refuses (RESOURCE_EXHAUSTED) text of more tokens than this, spending on text far
  // over it no more than on text at the limit; 0: no limit.
  size_t max_tokens = 0;
};

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerSpec spec);

  // Refuses text that is not well-formed UTF-8 (neither `tokenizers` nor a model's training
  // ever saw such text, so there are no ids to match), and text over options.max_tokens.
  absl::StatusOr<std::vector<int32_t>> Tokenize(std::string_view text,
                                                const EncodeOptions& options) const;
  // Never fails: bytes of invalid UTF-8 go through the pipeline as they are.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                              bool parse_special = false) const;
  // The text of `ids` through the tokenizer's decoder; ids out of range are skipped.
  std::string Decode(absl::Span<const int32_t> ids) const;

  // A lower bound on the tokens of any text of `bytes` bytes, known before tokenizing it: no
  // token stands for more text than its longest piece (or added token) times what the
  // normalizer may shrink. 0 where the normalizer may remove text (no bound).
  size_t MinTokens(size_t bytes) const;

  int vocab_size() const { return static_cast<int>(spec_.pieces.size()); }
  int bos_id() const { return spec_.bos_id; }
  int eos_id() const { return spec_.eos_id; }
  bool add_bos() const { return spec_.add_bos; }
  bool add_eos() const { return spec_.add_eos; }
  const std::string& piece(int id) const { return spec_.pieces[id]; }

 private:
  explicit Tokenizer(TokenizerSpec spec) : spec_(std::move(spec)) {}
  void EncodeText(std::string_view text, const EncodeOptions& options,
                  std::vector<int32_t>* out) const;
  // Whether text is far over max_tokens, counted a chunk at a time so that the count stops
  // (time and memory bounded by the limit, not the text) once it is.
  bool FarOverTokens(std::string_view text, const EncodeOptions& options, size_t max_tokens) const;
  // Cuts the added tokens `use(token)` accepts out of `text` (raw text, or normalized text for
  // the normalized tokens); calls emit_text(segment, offset) and emit_token(id) in order.
  template <typename Use, typename Text, typename Token>
  void SplitOnAddedTokens(std::string_view text, bool normalized, Use use, Text emit_text,
                          Token emit_token) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  // Whether (left, right) merges; lower priority merges first.
  bool MergePriority(int left, int right, float* priority, int* merged) const;

  TokenizerSpec spec_;
  // The most input bytes one token can stand for; 0: unbounded (MinTokens).
  double max_bytes_per_token_ = 0;
  std::unordered_map<std::string, int> piece_to_id_;
  // (left id, right id) -> (rank, merged id), for explicit merges.
  std::unordered_map<uint64_t, std::pair<int, int>> merge_ranks_;
  int byte_token_[256];  // <0xXX> ids for byte fallback, -1 where missing
  // The normalized form of each normalized added token (same order as spec_.added_tokens).
  std::vector<std::string> normalized_content_;
  std::vector<bool> is_added_;  // by id
  // Indices of the added tokens by the first byte of what they match: raw [0], normalized [1].
  std::vector<std::vector<int>> added_by_first_byte_[2];
};

// Loaders (tokenizer/loaders.cc).
class GgufFile;
// tokenizer.json; bos_id/eos_id come from the model's config (-1: none).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& tokenizer_json_path,
                                                           int bos_id, int eos_id);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const GgufFile& gguf,
                                                             const std::string& name);
// A GGUF file's tokenizer alone: a vocabulary-only GGUF (llama.cpp's test vocabularies) or a
// model's.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizerFile(const std::string& path);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path,
                                                                int vocab_size);

}  // namespace superweight
