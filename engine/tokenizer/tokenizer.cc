#include "engine/tokenizer/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <queue>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/tokenizer/pretokenize.h"
#include "engine/tokenizer/utf8.h"

namespace superweight {
namespace {

uint64_t PairKey(int left, int right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Byte offset of the code point that ends at `pos`.
size_t PreviousCodePoint(std::string_view text, size_t pos) {
  size_t p = pos - 1;
  while (p > 0 && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80 && pos - p < 4) --p;
  return p;
}

bool IsWhitespaceBefore(std::string_view text, size_t pos) {
  const size_t p = PreviousCodePoint(text, pos);
  int len;
  const uint32_t cp = DecodeUtf8(text, p, &len);
  return p + len == pos && u_isUWhiteSpace(static_cast<UChar32>(cp));
}

bool IsWordCodePoint(uint32_t cp) { return cp == '_' || u_isalnum(static_cast<UChar32>(cp)); }

bool IsWordByteAt(std::string_view text, size_t pos) {
  if (pos >= text.size()) return false;
  int len;
  return IsWordCodePoint(DecodeUtf8(text, pos, &len));
}

bool IsWordByteBefore(std::string_view text, size_t pos) {
  if (pos == 0) return false;
  const size_t p = PreviousCodePoint(text, pos);
  int len;
  const uint32_t cp = DecodeUtf8(text, p, &len);
  return p + len == pos && IsWordCodePoint(cp);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerSpec spec) {
  std::unique_ptr<Tokenizer> t(new Tokenizer(std::move(spec)));
  const TokenizerSpec& s = t->spec_;
  const int n = static_cast<int>(s.pieces.size());
  if (s.pieces.empty()) return absl::InvalidArgumentError("tokenizer has an empty vocabulary");
  if (s.merges.empty() && s.scores.size() != s.pieces.size()) {
    return absl::InvalidArgumentError("tokenizer needs merges or one score per piece");
  }
  t->piece_to_id_.reserve(s.pieces.size());
  for (int i = 0; i < n; ++i) t->piece_to_id_.emplace(s.pieces[i], i);
  for (size_t rank = 0; rank < s.merges.size(); ++rank) {
    auto l = t->piece_to_id_.find(s.merges[rank].first);
    auto r = t->piece_to_id_.find(s.merges[rank].second);
    auto m = t->piece_to_id_.find(s.merges[rank].first + s.merges[rank].second);
    if (l == t->piece_to_id_.end() || r == t->piece_to_id_.end() || m == t->piece_to_id_.end()) {
      continue;  // `tokenizers` ignores merges whose pieces are not in the vocabulary too
    }
    t->merge_ranks_.emplace(PairKey(l->second, r->second),
                            std::make_pair(static_cast<int>(rank), m->second));
  }
  const double shrink = s.normalizer ? s.normalizer->MaxShrink() : 1.0;
  if (shrink > 0) {
    // A piece's stored form is never shorter than the normalized text it covers: byte-level
    // pieces spell each byte with one or two, SentencePiece writes a space as 3-byte U+2581.
    size_t longest = 1;
    for (const std::string& piece : s.pieces) longest = std::max(longest, piece.size());
    for (const AddedToken& a : s.added_tokens) longest = std::max(longest, a.content.size());
    t->max_bytes_per_token_ = static_cast<double>(longest) * shrink;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = t->piece_to_id_.find(absl::StrFormat("<0x%02X>", b));
    t->byte_token_[b] = it == t->piece_to_id_.end() ? -1 : it->second;
  }
  for (const AddedToken& a : s.added_tokens) {
    if (a.content.empty() || a.id < 0 || a.id >= n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bad added token '%s' (id %d)", a.content, a.id));
    }
  }
  for (int id : {s.unk_id, s.bos_id, s.eos_id}) {
    if (id >= n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("special token id %d out of range (vocabulary of %d)", id, n));
    }
  }
  // Longest added tokens first, so that a token that prefixes another does not win.
  std::stable_sort(
      t->spec_.added_tokens.begin(), t->spec_.added_tokens.end(),
      [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  for (const AddedToken& a : t->spec_.added_tokens) {
    t->normalized_content_.push_back(
        a.normalized && s.normalizer != nullptr ? s.normalizer->Apply(a.content) : a.content);
  }
  t->is_added_.assign(n, false);
  for (const AddedToken& a : t->spec_.added_tokens) t->is_added_[a.id] = true;
  for (int kind = 0; kind < 2; ++kind) {
    t->added_by_first_byte_[kind].resize(256);
    for (size_t i = 0; i < t->spec_.added_tokens.size(); ++i) {
      if (t->spec_.added_tokens[i].normalized != (kind == 1)) continue;
      const std::string& text =
          kind == 1 ? t->normalized_content_[i] : t->spec_.added_tokens[i].content;
      if (text.empty()) continue;
      t->added_by_first_byte_[kind][static_cast<uint8_t>(text[0])].push_back(static_cast<int>(i));
    }
  }
  return t;
}

bool Tokenizer::MergePriority(int left, int right, float* priority, int* merged) const {
  if (!spec_.merges.empty()) {
    auto it = merge_ranks_.find(PairKey(left, right));
    if (it == merge_ranks_.end()) return false;
    *priority = static_cast<float>(it->second.first);
    *merged = it->second.second;
    return true;
  }
  auto it = piece_to_id_.find(spec_.pieces[left] + spec_.pieces[right]);
  if (it == piece_to_id_.end()) return false;
  *priority = -spec_.scores[it->second];
  *merged = it->second;
  return true;
}

void Tokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (spec_.ignore_merges) {
    auto it = piece_to_id_.find(std::string(word));
    if (it != piece_to_id_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  // Initial symbols: the word's characters, unknown ones as their bytes or the unknown token.
  std::vector<int> ids;
  std::string ch;
  for (size_t pos = 0; pos < word.size();) {
    int len;
    DecodeUtf8(word, pos, &len);
    ch.assign(word.data() + pos, len);
    pos += len;
    auto it = piece_to_id_.find(ch);
    if (it != piece_to_id_.end()) {
      ids.push_back(it->second);
      continue;
    }
    if (spec_.byte_fallback) {
      bool all = true;
      for (unsigned char c : ch) all = all && byte_token_[c] >= 0;
      if (all) {
        for (unsigned char c : ch) ids.push_back(byte_token_[c]);
        continue;
      }
    }
    if (spec_.unk_id >= 0 && !(spec_.fuse_unk && !ids.empty() && ids.back() == spec_.unk_id)) {
      ids.push_back(spec_.unk_id);
    }
  }
  // Merge the best pair first (lowest priority, then leftmost) until none applies, with a
  // heap over a doubly linked list: O(n log n), so a whole text as one word stays fast.
  const int n = static_cast<int>(ids.size());
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    float priority;
    int pos, left, right, merged;
    bool operator>(const Candidate& o) const {
      return priority != o.priority ? priority > o.priority : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    float p;
    int merged;
    if (MergePriority(ids[pos], ids[next[pos]], &p, &merged)) {
      heap.push({p, pos, ids[pos], ids[next[pos]], merged});
    }
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    const int r = next[c.pos] >= 0 ? next[c.pos] : -1;
    if (!alive[c.pos] || r < 0 || ids[c.pos] != c.left || ids[r] != c.right) continue;
    ids[c.pos] = c.merged;
    alive[r] = false;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    consider(prev[c.pos]);
    consider(c.pos);
  }
  for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out->push_back(ids[i]);
}

template <typename Use, typename Text, typename Token>
void Tokenizer::SplitOnAddedTokens(std::string_view text, bool normalized, Use use, Text emit_text,
                                   Token emit_token) const {
  const std::vector<std::vector<int>>& by_byte = added_by_first_byte_[normalized ? 1 : 0];
  size_t start = 0;  // of the text not yet emitted
  for (size_t pos = 0; pos < text.size(); ++pos) {
    for (int index : by_byte[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& token = spec_.added_tokens[index];
      const std::string& literal = normalized ? normalized_content_[index] : token.content;
      if (!use(token) || text.compare(pos, literal.size(), literal) != 0) continue;
      size_t begin = pos, end = pos + literal.size();
      if (token.single_word && (IsWordByteBefore(text, begin) || IsWordByteAt(text, end))) continue;
      if (token.lstrip) {
        while (begin > start && IsWhitespaceBefore(text, begin))
          begin = PreviousCodePoint(text, begin);
      }
      if (token.rstrip) {
        int len;
        while (end < text.size() &&
               u_isUWhiteSpace(static_cast<UChar32>(DecodeUtf8(text, end, &len)))) {
          end += len;
        }
      }
      if (begin > start) emit_text(text.substr(start, begin - start), start);
      emit_token(token.id);
      start = end;
      pos = end - 1;
      break;
    }
  }
  if (start < text.size()) emit_text(text.substr(start), start);
}

void Tokenizer::EncodeText(std::string_view text, const EncodeOptions& options,
                           std::vector<int32_t>* out) const {
  const auto use = [&](const AddedToken& t) { return options.parse_special || !t.special; };
  const auto emit_token = [&](int id) { out->push_back(id); };
  std::vector<Piece> pieces;
  SplitOnAddedTokens(
      text, /*normalized=*/false, use,
      [&](std::string_view segment, size_t offset) {
        const std::string normalized =
            spec_.normalizer ? spec_.normalizer->Apply(segment) : std::string(segment);
        SplitOnAddedTokens(
            normalized, /*normalized=*/true, use,
            [&](std::string_view words, size_t sub_offset) {
              pieces.clear();
              pieces.push_back({std::string(words), offset == 0 && sub_offset == 0});
              if (spec_.pre_tokenizer) spec_.pre_tokenizer->Apply(&pieces);
              for (const Piece& p : pieces) EncodeWord(p.text, out);
            },
            emit_token);
      },
      emit_token);
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Tokenize(std::string_view text,
                                                         const EncodeOptions& options) const {
  size_t bad;
  if (!IsValidUtf8(text, &bad)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text is not valid UTF-8: byte 0x%02X at offset %d does not start a well-formed sequence",
        static_cast<uint8_t>(text[bad]), bad));
  }
  const auto over = [&](size_t at_least) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("text of %d bytes is over the limit of %d tokens (at least %d)",
                        text.size(), options.max_tokens, at_least));
  };
  if (options.max_tokens > 0) {
    const size_t at_least = MinTokens(text.size());
    if (at_least > options.max_tokens) return over(at_least);
    if (FarOverTokens(text, options, options.max_tokens)) return over(options.max_tokens + 1);
  }
  std::vector<int32_t> out;
  if (options.add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  EncodeText(text, options, &out);
  if (options.add_eos && spec_.eos_id >= 0) out.push_back(spec_.eos_id);
  if (options.max_tokens > 0 && out.size() > options.max_tokens) return over(out.size());
  return out;
}

bool Tokenizer::FarOverTokens(std::string_view text, const EncodeOptions& options,
                              size_t max_tokens) const {
  // Text up to a few bytes per allowed token is tokenized whole: its cost is the limit's.
  constexpr size_t kChunkBytes = size_t{1} << 20;
  if (text.size() <= std::max(kChunkBytes, 8 * max_tokens)) return false;
  // Chunks end after a newline where one is near (else on a character boundary), and each
  // boundary may tokenize a few tokens differently from the whole text: counted with a margin
  // of 16 per boundary, so that only text whose own count is surely over is called so.
  constexpr size_t kMarginPerBoundary = 16;
  size_t count = 0;
  std::vector<int32_t> part;
  for (size_t begin = 0, boundaries = 0; begin < text.size(); ++boundaries) {
    size_t end = std::min(text.size(), begin + kChunkBytes);
    if (end < text.size()) {
      const size_t newline = text.find('\n', end);
      if (newline != std::string_view::npos && newline - end < kChunkBytes / 16) {
        end = newline + 1;
      } else {
        while (end > begin && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) --end;
        if (end == begin) end = std::min(text.size(), begin + kChunkBytes);  // not UTF-8 at all
      }
    }
    part.clear();
    EncodeText(text.substr(begin, end - begin), options, &part);
    count += part.size();
    if (count > max_tokens + kMarginPerBoundary * (boundaries + 1)) return true;
    begin = end;
  }
  return false;
}

size_t Tokenizer::MinTokens(size_t bytes) const {
  if (max_bytes_per_token_ <= 0) return 0;
  return static_cast<size_t>(static_cast<double>(bytes) / max_bytes_per_token_);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  EncodeOptions options;
  options.parse_special = parse_special;
  std::vector<int32_t> out;
  if (add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  EncodeText(text, options, &out);
  return out;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  std::vector<std::string> run;  // pieces the decoder turns into text together
  const auto flush = [&] {
    if (run.empty()) return;
    if (spec_.decoder) spec_.decoder->Apply(&run);
    out +=
        absl::StrJoin(run, spec_.decoder == nullptr && spec_.join_decoded_with_spaces ? " " : "");
    run.clear();
  };
  bool strip_space = false;  // the first token is decoded and starts `out`
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (spec_.decode_added_tokens_raw && is_added_[id]) {
      flush();
      out += spec_.pieces[id];
    } else {
      strip_space = strip_space || (first && spec_.strip_first_space);
      run.push_back(spec_.pieces[id]);
    }
    first = false;
  }
  flush();
  if (strip_space && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

}  // namespace superweight
