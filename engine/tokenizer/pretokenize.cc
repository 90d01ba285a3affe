#include "engine/tokenizer/pretokenize.h"

#include <unicode/regex.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/icu_regex.h"
#include "engine/tokenizer/utf8.h"
#include "engine/util/utf8_prefix.h"

namespace superweight {

const char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

struct CodePoint {
  uint32_t cp;
  size_t pos;  // byte offset
};

bool IsLetter(uint32_t cp) { return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_L_MASK) != 0; }
bool IsNumber(uint32_t cp) { return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_N_MASK) != 0; }
bool IsSpace(uint32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

// llama.cpp's GPT-2 pattern lacks the final `|\s+`; it keeps unmatched text as words, and the
// only text that alternative would match (one space before a non-space the other branches do
// not take) is a single character either way, so both cut the same.
constexpr char kLlamaCppGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";

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

absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::UnimplementedError(absl::StrFormat("unknown split behavior '%s'", name));
}

namespace {

// A match or the text between two matches, in bytes of the piece.
struct Segment {
  size_t begin, end;
  bool is_match;
};

class RegexSplit : public PreTokenizer {
 public:
  RegexSplit(std::unique_ptr<icu::RegexPattern> pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  void Apply(std::vector<Piece>* pieces) const override {
    UErrorCode status = U_ZERO_ERROR;
    // A matcher per call: ICU matchers are not thread-safe, the compiled pattern is.
    std::unique_ptr<icu::RegexMatcher> matcher(pattern_->matcher(status));
    if (U_FAILURE(status)) return;  // out of memory: leave the pieces whole
    std::vector<Piece> out;
    out.reserve(pieces->size() * 2);
    std::vector<Segment> segments;
    for (Piece& piece : *pieces) {
      segments.clear();
      FindSegments(matcher.get(), piece.text, &segments);
      Combine(piece, segments, &out);
    }
    *pieces = std::move(out);
  }

 private:
  void FindSegments(icu::RegexMatcher* matcher, const std::string& text,
                    std::vector<Segment>* segments) const {
    std::vector<std::pair<size_t, size_t>> matches;
    FindMatches(matcher, text, &matches);
    size_t previous = 0;
    for (const auto& [begin, end] : matches) {
      if (begin > previous) segments->push_back({previous, begin, invert_});
      segments->push_back({begin, end, !invert_});
      previous = end;
    }
    if (previous < text.size()) segments->push_back({previous, text.size(), invert_});
  }

  void Combine(const Piece& piece, const std::vector<Segment>& segments,
               std::vector<Piece>* out) const {
    std::vector<std::pair<size_t, size_t>> ranges;
    switch (behavior_) {
      case SplitBehavior::kRemoved:
        for (const Segment& s : segments) {
          if (!s.is_match) ranges.push_back({s.begin, s.end});
        }
        break;
      case SplitBehavior::kIsolated:
        for (const Segment& s : segments) ranges.push_back({s.begin, s.end});
        break;
      case SplitBehavior::kMergedWithPrevious: {
        // A match joins the text before it, unless that was a match too.
        bool previous_match = false;
        for (const Segment& s : segments) {
          if (s.is_match && !previous_match && !ranges.empty()) {
            ranges.back().second = s.end;
          } else {
            ranges.push_back({s.begin, s.end});
          }
          previous_match = s.is_match;
        }
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        // A match joins the text after it, unless that is a match too.
        bool next_match = false;
        for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
          if (it->is_match && !next_match && !ranges.empty()) {
            ranges.back().first = it->begin;
          } else {
            ranges.push_back({it->begin, it->end});
          }
          next_match = it->is_match;
        }
        std::reverse(ranges.begin(), ranges.end());
        break;
      }
      case SplitBehavior::kContiguous: {
        // Adjacent matches form one word.
        bool previous_match = false;
        for (const Segment& s : segments) {
          if (s.is_match == previous_match && !ranges.empty()) {
            ranges.back().second = s.end;
          } else {
            ranges.push_back({s.begin, s.end});
          }
          previous_match = s.is_match;
        }
        break;
      }
    }
    for (const auto& [begin, end] : ranges) {
      if (begin == end) continue;
      out->push_back({piece.text.substr(begin, end - begin), piece.at_text_start && begin == 0});
    }
  }

  std::unique_ptr<icu::RegexPattern> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class Gpt2Split : public PreTokenizer {
 public:
  void Apply(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces->size() * 4);
    for (const Piece& piece : *pieces) {
      bool first = piece.at_text_start;
      for (std::string_view word : SplitGpt2(piece.text)) {
        out.push_back({std::string(word), first});
        first = false;
      }
    }
    *pieces = std::move(out);
  }
};

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {
    // GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map to 256 + n.
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      AppendUtf8(printable ? b : 256 + next++, &byte_to_char_[b]);
    }
  }

  void Apply(std::vector<Piece>* pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : *pieces) {
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, 1, ' ');
      }
    }
    if (use_regex_) split_.Apply(pieces);
    for (Piece& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) mapped += byte_to_char_[c];
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_, use_regex_;
  Gpt2Split split_;
  std::string byte_to_char_[256];
};

class Metaspace : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  void Apply(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (Piece& p : *pieces) {
      std::string text = absl::StrReplaceAll(p.text, {{" ", replacement_}});
      const bool starts_marked = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts_marked && (scheme_ == PrependScheme::kAlways ||
                             (scheme_ == PrependScheme::kFirst && p.at_text_start))) {
        text.insert(0, replacement_);
      }
      if (!split_) {
        if (!text.empty()) out.push_back({std::move(text), p.at_text_start});
        continue;
      }
      // Each word starts at a marker.
      size_t start = 0;
      for (size_t pos = 1; pos <= text.size(); ++pos) {
        if (pos == text.size() || text.compare(pos, replacement_.size(), replacement_) == 0) {
          out.push_back({text.substr(start, pos - start), p.at_text_start && start == 0});
          start = pos;
        }
      }
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class PreTokenizerSequence : public PreTokenizer {
 public:
  explicit PreTokenizerSequence(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::vector<Piece>* pieces) const override {
    for (const auto& step : steps_) step->Apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeRegexSplit(std::string_view pattern,
                                                             SplitBehavior behavior, bool invert) {
  if (!invert && (pattern == kGpt2Pattern || pattern == kLlamaCppGpt2Pattern) &&
      behavior == SplitBehavior::kIsolated) {
    return MakeGpt2Split();
  }
  auto compiled = CompileTokenizerRegex(pattern);
  if (!compiled.ok()) return compiled.status();
  return std::make_unique<RegexSplit>(std::move(*compiled), behavior, invert);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeLiteralSplit(std::string_view literal,
                                                               SplitBehavior behavior,
                                                               bool invert) {
  if (literal.empty()) return absl::InvalidArgumentError("Split with an empty string pattern");
  return MakeRegexSplit(EscapeRegexLiteral(literal), behavior, invert);
}

std::unique_ptr<PreTokenizer> MakeByteLevel(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevel>(add_prefix_space, use_regex);
}

std::unique_ptr<PreTokenizer> MakeGpt2Split() { return std::make_unique<Gpt2Split>(); }

std::unique_ptr<PreTokenizer> MakeMetaspace(std::string replacement, PrependScheme scheme,
                                            bool split) {
  return std::make_unique<Metaspace>(std::move(replacement), scheme, split);
}

std::unique_ptr<PreTokenizer> MakeSequence(std::vector<std::unique_ptr<PreTokenizer>> steps) {
  return std::make_unique<PreTokenizerSequence>(std::move(steps));
}

namespace {

// llama.cpp's table (src/llama-vocab.cpp, llm_tokenizer_bpe): which regexes each
// `tokenizer.ggml.pre` runs. Where llama.cpp rewrote a model's regex for its own matcher
// (Llama 3's and Qwen2's case-insensitive contractions, Tekken's letter classes), the model's
// original tokenizer.json regex is used: ICU runs it as written.
constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kQwen2Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kPoroPattern[] =
    R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+)";

struct GgufPreEntry {
  std::vector<const char*> names;
  std::vector<const char*> regexes;
};

const std::vector<GgufPreEntry>& GgufPreTable() {
  static const auto* table = new std::vector<GgufPreEntry>{
      {{"default"},
       {R"([\p{P}\$\+<=>\^~\|]+)", kLlamaCppGpt2Pattern, R"(\p{N}+)", R"([0-9][0-9][0-9])"}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe"},
       {kLlama3Pattern}},
      // Non-ASCII characters as \x{...}: an editor that normalizes text to NFC would turn
      // U+1FD3 into U+0390 and break the range it ends.
      {{"deepseek-llm"},
       {"[\r\n]",
        R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)",
        R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)",
        R"(\s+$)", R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)", R"(\p{N}+)"}},
      {{"deepseek-v3"},
       {R"(\p{N}{1,3})", R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)",
        R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}},
      {{"deepseek-coder"},
       {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)",
        R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)", R"(\p{N})"}},
      {{"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kLlamaCppGpt2Pattern, R"([0-9][0-9][0-9])"}},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
       {R"(\p{N})", kLlamaCppGpt2Pattern}},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es",
        "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais"},
       {kLlamaCppGpt2Pattern}},
      {{"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"}, {kQwen2Pattern}},
      {{"poro-chat", "bloom", "gpt3-finnish"}, {kPoroPattern}},
      {{"viking"}, {kPoroPattern, R"(\p{N})"}},
      {{"tekken"},
       {R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}},
      {{"chameleon"},
       {R"(<sentinel:[0-9]+>)", R"((IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z)", R"(([\t\n]|    |  ))",
        R"(\p{N})", R"([\p{P}!-/:-@\[-`{-~])", kLlamaCppGpt2Pattern}},
  };
  return *table;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> GgufPreTokenizerRegexes(std::string_view pre) {
  for (const GgufPreEntry& entry : GgufPreTable()) {
    for (const char* name : entry.names) {
      if (pre == name) return std::vector<std::string>(entry.regexes.begin(), entry.regexes.end());
    }
  }
  return absl::NotFoundError(absl::StrFormat("GGUF pre-tokenizer '%s' is not one this engine knows",
                                             Utf8Prefix(pre, 100)));
}

std::vector<std::string> KnownGgufPreTokenizers() {
  std::vector<std::string> names;
  for (const GgufPreEntry& entry : GgufPreTable()) {
    names.insert(names.end(), entry.names.begin(), entry.names.end());
  }
  return names;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeGgufPreTokenizer(std::string_view pre) {
  auto regexes = GgufPreTokenizerRegexes(pre);
  if (!regexes.ok()) return regexes.status();
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  for (const std::string& regex : *regexes) {
    auto step = MakeRegexSplit(regex, SplitBehavior::kIsolated, /*invert=*/false);
    if (!step.ok()) return step.status();
    steps.push_back(std::move(*step));
  }
  steps.push_back(MakeByteLevel(/*add_prefix_space=*/false, /*use_regex=*/false));
  return MakeSequence(std::move(steps));
}

}  // namespace superweight
