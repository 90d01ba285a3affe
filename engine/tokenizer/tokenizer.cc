#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <queue>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/pretokenize.h"
#include "engine/tokenizer/utf8.h"

namespace superweight {
namespace {

uint64_t PairKey(int left, int right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerSpec spec) {
  std::unique_ptr<Tokenizer> t(new Tokenizer(std::move(spec)));
  const TokenizerSpec& s = t->spec_;
  if (s.pieces.empty()) return absl::InvalidArgumentError("tokenizer has an empty vocabulary");
  if (s.merges.empty() && s.scores.size() != s.pieces.size()) {
    return absl::InvalidArgumentError("tokenizer needs merges or one score per piece");
  }
  t->piece_to_id_.reserve(s.pieces.size());
  for (size_t i = 0; i < s.pieces.size(); ++i) t->piece_to_id_.emplace(s.pieces[i], i);
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
  for (int b = 0; b < 256; ++b) {
    auto it = t->piece_to_id_.find(absl::StrFormat("<0x%02X>", b));
    t->byte_token_[b] = it == t->piece_to_id_.end() ? -1 : it->second;
  }
  // GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map to 256 + n.
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const uint32_t cp = printable ? b : 256 + next++;
    AppendUtf8(cp, &t->byte_to_char_[b]);
    t->char_to_byte_[cp] = static_cast<uint8_t>(b);
  }
  for (const auto& [content, id] : s.added_tokens) {
    if (content.empty() || id < 0 || id >= static_cast<int>(s.pieces.size())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bad added token '%s' (id %d)", content, id));
    }
  }
  if (s.unk_id >= static_cast<int>(s.pieces.size())) {
    return absl::InvalidArgumentError("unknown-token id out of range");
  }
  // Longest added tokens first, so that a token that prefixes another does not win.
  std::stable_sort(t->spec_.added_tokens.begin(), t->spec_.added_tokens.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
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
  // Initial symbols: characters (or bytes, for the byte-level alphabet).
  std::vector<int> ids;
  auto push_unknown = [&](std::string_view bytes) {
    if (spec_.byte_fallback) {
      bool all = true;
      for (unsigned char c : bytes) all = all && byte_token_[c] >= 0;
      if (all) {
        for (unsigned char c : bytes) ids.push_back(byte_token_[c]);
        return;
      }
    }
    if (spec_.unk_id >= 0 && (ids.empty() || ids.back() != spec_.unk_id)) {
      ids.push_back(spec_.unk_id);
    }
  };
  if (spec_.mode == TokenizerSpec::Mode::kByteLevel) {
    for (unsigned char c : word) {
      auto it = piece_to_id_.find(byte_to_char_[c]);
      if (it != piece_to_id_.end()) {
        ids.push_back(it->second);
      } else {
        push_unknown(std::string_view(reinterpret_cast<const char*>(&c), 1));
      }
    }
  } else {
    for (size_t pos = 0; pos < word.size();) {
      int len;
      DecodeUtf8(word, pos, &len);
      std::string_view ch = word.substr(pos, len);
      auto it = piece_to_id_.find(std::string(ch));
      if (it != piece_to_id_.end()) {
        ids.push_back(it->second);
      } else {
        push_unknown(ch);
      }
      pos += len;
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

void Tokenizer::EncodeSegment(std::string_view segment, std::vector<int32_t>* out) const {
  switch (spec_.pre) {
    case TokenizerSpec::PreTokenizer::kGpt2Regex:
      if (spec_.split_digits) {
        size_t start = 0;
        for (size_t pos = 0; pos <= segment.size(); ++pos) {
          if (pos < segment.size() && !(segment[pos] >= '0' && segment[pos] <= '9')) continue;
          for (std::string_view word : SplitGpt2(segment.substr(start, pos - start))) {
            EncodeWord(word, out);
          }
          if (pos < segment.size()) EncodeWord(segment.substr(pos, 1), out);
          start = pos + 1;
        }
        return;
      }
      for (std::string_view word : SplitGpt2(segment)) EncodeWord(word, out);
      return;
    case TokenizerSpec::PreTokenizer::kMetaspaceSplit: {
      // Words start at each marker.
      size_t start = 0;
      for (size_t pos = 1; pos <= segment.size(); ++pos) {
        if (pos == segment.size() || segment.substr(pos, 3) == kSpaceMarker) {
          EncodeWord(segment.substr(start, pos - start), out);
          start = pos;
        }
      }
      return;
    }
    case TokenizerSpec::PreTokenizer::kNone:
      EncodeWord(segment, out);
      return;
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  std::string normalized;
  if (spec_.spaces_to_marker || spec_.prepend_space_marker) {
    const bool leading_space = !text.empty() && text[0] == ' ';
    if (spec_.prepend_space_marker && !text.empty() &&
        !(spec_.prepend_unless_leading_space && leading_space)) {
      normalized = kSpaceMarker;
    }
    normalized += spec_.spaces_to_marker
                      ? absl::StrReplaceAll(absl::string_view(text.data(), text.size()),
                                            {{" ", kSpaceMarker}})
                      : std::string(text);
    text = normalized;
  }
  size_t start = 0, pos = 0;
  while (pos < text.size()) {
    int matched = -1;
    size_t matched_len = 0;
    for (const auto& [content, id] : spec_.added_tokens) {
      if (text.compare(pos, content.size(), content) == 0) {
        matched = id;
        matched_len = content.size();
        break;
      }
    }
    if (matched < 0) {
      ++pos;
      continue;
    }
    if (pos > start) EncodeSegment(text.substr(start, pos - start), &out);
    out.push_back(matched);
    pos += matched_len;
    start = pos;
  }
  if (start < text.size()) EncodeSegment(text.substr(start), &out);
  return out;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    const std::string& p = spec_.pieces[id];
    if (spec_.mode == TokenizerSpec::Mode::kByteLevel) {
      bool is_added = false;
      for (const auto& a : spec_.added_tokens) is_added = is_added || a.second == id;
      if (is_added) {
        out += p;
        continue;
      }
      for (size_t pos = 0; pos < p.size();) {
        int len;
        uint32_t cp = DecodeUtf8(p, pos, &len);
        auto it = char_to_byte_.find(cp);
        if (it != char_to_byte_.end()) out.push_back(static_cast<char>(it->second));
        pos += len;
      }
    } else {
      unsigned byte;
      if (p.size() == 6 && std::sscanf(p.c_str(), "<0x%02X>", &byte) == 1) {
        out.push_back(static_cast<char>(byte));
      } else {
        out += absl::StrReplaceAll(p, {{kSpaceMarker, " "}});
      }
    }
  }
  return out;
}

}  // namespace superweight
