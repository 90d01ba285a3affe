// Builds TokenizerSpecs from the three places tokenizers live.
#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/formats/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "engine/util/byte_reader.h"
#include "engine/util/mapped_file.h"
#include "engine/util/utf8_prefix.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(const std::string& name, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s", name, msg));
}

// A short form of a JSON node for error messages.
std::string Brief(const Json& j) { return Utf8Prefix(j.dump(), 200); }

// A {"String": s} or {"Regex": r} pattern.
absl::Status ReadPattern(const Json& node, const std::string& name, std::string* pattern,
                         bool* is_regex) {
  const Json& p = node.contains("pattern") ? node["pattern"] : Json();
  if (p.is_object() && p.contains("String") && p["String"].is_string()) {
    *pattern = p["String"].get<std::string>();
    *is_regex = false;
    return absl::OkStatus();
  }
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
    *pattern = p["Regex"].get<std::string>();
    *is_regex = true;
    return absl::OkStatus();
  }
  return Invalid(name, "pattern is neither {\"String\": ...} nor {\"Regex\": ...}: " + Brief(node));
}

std::string StringField(const Json& node, const char* key, const std::string& fallback) {
  return node.contains(key) && node[key].is_string() ? node[key].get<std::string>() : fallback;
}

bool BoolField(const Json& node, const char* key, bool fallback) {
  return node.contains(key) && node[key].is_boolean() ? node[key].get<bool>() : fallback;
}

absl::StatusOr<std::unique_ptr<Normalizer>> ReadNormalizer(const Json& n, const std::string& name) {
  if (!n.is_object()) return Invalid(name, "normalizer is not an object");
  const std::string type = StringField(n, "type", "");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    const Json& list = n.contains("normalizers") ? n["normalizers"] : Json();
    if (!list.is_array()) return Invalid(name, "normalizer Sequence without a list");
    for (const Json& step : list) {
      auto s = ReadNormalizer(step, name);
      if (!s.ok()) return s.status();
      steps.push_back(std::move(*s));
    }
    return MakeNormalizerSequence(std::move(steps));
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    return MakeUnicodeNormalizer(type);
  }
  if (type == "Lowercase") return MakeLowercase();
  if (type == "Strip") {
    return MakeStrip(BoolField(n, "strip_left", true), BoolField(n, "strip_right", true));
  }
  if (type == "StripAccents") return MakeStripAccents();
  if (type == "Prepend") return MakePrepend(StringField(n, "prepend", ""));
  if (type == "Replace") {
    std::string pattern;
    bool is_regex;
    if (auto s = ReadPattern(n, name, &pattern, &is_regex); !s.ok()) return s;
    auto r = MakeReplace(pattern, is_regex, StringField(n, "content", ""));
    if (!r.ok()) return Invalid(name, std::string(r.status().message()));
    return r;
  }
  return absl::UnimplementedError(
      absl::StrFormat("%s: unsupported normalizer '%s': %s", name, type, Brief(n)));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ReadPreTokenizer(const Json& p,
                                                               const std::string& name) {
  if (!p.is_object()) return Invalid(name, "pre_tokenizer is not an object");
  const std::string type = StringField(p, "type", "");
  auto behavior_of = [&](const char* fallback) -> absl::StatusOr<SplitBehavior> {
    auto b = ParseSplitBehavior(StringField(p, "behavior", fallback));
    if (!b.ok())
      return absl::UnimplementedError(absl::StrFormat("%s: %s", name, b.status().message()));
    return b;
  };
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    const Json& list = p.contains("pretokenizers") ? p["pretokenizers"] : Json();
    if (!list.is_array()) return Invalid(name, "pre_tokenizer Sequence without a list");
    for (const Json& step : list) {
      auto s = ReadPreTokenizer(step, name);
      if (!s.ok()) return s.status();
      steps.push_back(std::move(*s));
    }
    return MakeSequence(std::move(steps));
  }
  if (type == "Split") {
    std::string pattern;
    bool is_regex;
    if (auto s = ReadPattern(p, name, &pattern, &is_regex); !s.ok()) return s;
    auto behavior = behavior_of("");
    if (!behavior.ok()) return behavior.status();
    const bool invert = BoolField(p, "invert", false);
    auto split = is_regex ? MakeRegexSplit(pattern, *behavior, invert)
                          : MakeLiteralSplit(pattern, *behavior, invert);
    if (!split.ok()) return Invalid(name, std::string(split.status().message()));
    return split;
  }
  if (type == "ByteLevel") {
    return MakeByteLevel(BoolField(p, "add_prefix_space", true), BoolField(p, "use_regex", true));
  }
  if (type == "Digits") {
    return MakeRegexSplit(BoolField(p, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)",
                          SplitBehavior::kIsolated, false);
  }
  if (type == "Punctuation") {
    auto behavior = behavior_of("Isolated");
    if (!behavior.ok()) return behavior.status();
    // Unicode punctuation and the ASCII punctuation characters (some are symbols: $+<=>^`|~).
    return MakeRegexSplit(R"([\p{P}!-/:-@\[-`{-~])", *behavior, false);
  }
  if (type == "Whitespace") {
    return MakeRegexSplit(R"(\w+|[^\w\s]+)", SplitBehavior::kRemoved, /*invert=*/true);
  }
  if (type == "WhitespaceSplit") return MakeRegexSplit(R"(\s+)", SplitBehavior::kRemoved, false);
  if (type == "CharDelimiterSplit") {
    return MakeLiteralSplit(StringField(p, "delimiter", ""), SplitBehavior::kRemoved, false);
  }
  if (type == "Metaspace") {
    const std::string replacement = StringField(p, "replacement", kSpaceMarker);
    // Older files say add_prefix_space instead of prepend_scheme.
    std::string scheme = StringField(p, "prepend_scheme", "");
    if (scheme.empty()) scheme = BoolField(p, "add_prefix_space", true) ? "always" : "never";
    PrependScheme prepend;
    if (scheme == "always") {
      prepend = PrependScheme::kAlways;
    } else if (scheme == "first") {
      prepend = PrependScheme::kFirst;
    } else if (scheme == "never") {
      prepend = PrependScheme::kNever;
    } else {
      return absl::UnimplementedError(
          absl::StrFormat("%s: unknown Metaspace prepend_scheme '%s'", name, scheme));
    }
    return MakeMetaspace(replacement, prepend, BoolField(p, "split", true));
  }
  return absl::UnimplementedError(
      absl::StrFormat("%s: unsupported pre-tokenizer '%s': %s", name, type, Brief(p)));
}

absl::StatusOr<std::unique_ptr<Decoder>> ReadDecoder(const Json& d, const std::string& name) {
  if (!d.is_object()) return Invalid(name, "decoder is not an object");
  const std::string type = StringField(d, "type", "");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    const Json& list = d.contains("decoders") ? d["decoders"] : Json();
    if (!list.is_array()) return Invalid(name, "decoder Sequence without a list");
    for (const Json& step : list) {
      auto s = ReadDecoder(step, name);
      if (!s.ok()) return s.status();
      steps.push_back(std::move(*s));
    }
    return MakeDecoderSequence(std::move(steps));
  }
  if (type == "ByteLevel") return MakeByteLevelDecoder();
  if (type == "ByteFallback") return MakeByteFallbackDecoder();
  if (type == "Fuse") return MakeFuseDecoder();
  if (type == "Replace") {
    std::string pattern;
    bool is_regex;
    if (auto s = ReadPattern(d, name, &pattern, &is_regex); !s.ok()) return s;
    auto r = MakeReplaceDecoder(pattern, is_regex, StringField(d, "content", ""));
    if (!r.ok()) return Invalid(name, std::string(r.status().message()));
    return r;
  }
  if (type == "Strip") {
    auto count = [&](const char* key) {
      return d.contains(key) && d[key].is_number_unsigned()
                 ? static_cast<int>(std::min<uint64_t>(d[key].get<uint64_t>(), 1 << 20))
                 : 0;
    };
    return MakeStripDecoder(StringField(d, "content", " "), count("start"), count("stop"));
  }
  if (type == "Metaspace") {
    std::string scheme = StringField(d, "prepend_scheme", "");
    if (scheme.empty()) scheme = BoolField(d, "add_prefix_space", true) ? "always" : "never";
    return MakeMetaspaceDecoder(StringField(d, "replacement", kSpaceMarker), scheme == "never");
  }
  return absl::UnimplementedError(
      absl::StrFormat("%s: unsupported decoder '%s': %s", name, type, Brief(d)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& path, int bos_id,
                                                           int eos_id) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  const char* begin = reinterpret_cast<const char*>((*file)->data());
  Json root = Json::parse(begin, begin + (*file)->size(), nullptr, false);
  if (root.is_discarded() || !root.is_object()) return Invalid(path, "not a JSON object");
  const Json& model = root.contains("model") ? root["model"] : Json();
  if (!model.is_object()) return Invalid(path, "no model object");
  const std::string model_type = StringField(model, "type", "");
  if (model_type != "BPE") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: only BPE tokenizer models are supported (this one is '%s')", path, model_type));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return absl::UnimplementedError(absl::StrFormat("%s: BPE %s is not supported", path, key));
    }
  }
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() != 0) {
    return absl::UnimplementedError(absl::StrFormat("%s: BPE dropout is not supported", path));
  }
  TokenizerSpec spec;
  const Json& vocab = model.contains("vocab") ? model["vocab"] : Json();
  if (!vocab.is_object()) return Invalid(path, "model.vocab is not an object");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_unsigned()) return Invalid(path, "vocab id is not an integer");
    const uint64_t id = it.value().get<uint64_t>();
    if (id >= (1u << 24)) return Invalid(path, "vocab id out of range");
    if (id >= spec.pieces.size()) spec.pieces.resize(id + 1);
    spec.pieces[id] = it.key();
  }
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const Json& m : model["merges"]) {
      if (m.is_string()) {  // "left right"
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ', 1);
        if (space == std::string::npos) return Invalid(path, "merge without a space: " + s);
        spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        return Invalid(path, "malformed merge");
      }
    }
  }
  if (spec.merges.empty()) return Invalid(path, "BPE model has no merges");
  spec.byte_fallback = BoolField(model, "byte_fallback", false);
  spec.fuse_unk = BoolField(model, "fuse_unk", false);
  spec.ignore_merges = BoolField(model, "ignore_merges", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = vocab.find(model["unk_token"].get<std::string>());
    if (it != vocab.end()) spec.unk_id = it.value().get<int>();
  }
  const auto component = [&](const char* key) {
    return root.contains(key) && !root[key].is_null() ? &root[key] : nullptr;
  };
  if (const Json* n = component("normalizer")) {
    auto normalizer = ReadNormalizer(*n, path);
    if (!normalizer.ok()) return normalizer.status();
    spec.normalizer = std::move(*normalizer);
  }
  if (const Json* p = component("pre_tokenizer")) {
    auto pre = ReadPreTokenizer(*p, path);
    if (!pre.ok()) return pre.status();
    spec.pre_tokenizer = std::move(*pre);
  }
  if (const Json* d = component("decoder")) {
    auto decoder = ReadDecoder(*d, path);
    if (!decoder.ok()) return decoder.status();
    spec.decoder = std::move(*decoder);
  } else {
    spec.join_decoded_with_spaces = true;
  }
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const Json& a : root["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string()) {
        return Invalid(path, "malformed added token");
      }
      AddedToken token;
      token.id = a["id"].get<int>();
      if (token.id < 0 || token.id >= (1 << 24))
        return Invalid(path, "added token id out of range");
      token.content = a["content"].get<std::string>();
      token.special = BoolField(a, "special", false);
      token.normalized = BoolField(a, "normalized", !token.special);
      token.lstrip = BoolField(a, "lstrip", false);
      token.rstrip = BoolField(a, "rstrip", false);
      token.single_word = BoolField(a, "single_word", false);
      if (token.id >= static_cast<int>(spec.pieces.size())) spec.pieces.resize(token.id + 1);
      spec.pieces[token.id] = token.content;
      spec.added_tokens.push_back(std::move(token));
    }
  }
  spec.bos_id = bos_id;
  spec.eos_id = eos_id;
  spec.add_bos = bos_id >= 0;
  return Tokenizer::Create(std::move(spec));
}

namespace {

// Pre-tokenizers for which llama.cpp takes a word that is a whole piece as it is.
bool GgufIgnoresMerges(const std::string& pre) {
  for (const char* name : {"llama3", "llama-v3", "llama-bpe", "falcon3", "tekken"}) {
    if (pre == name) return true;
  }
  return false;
}

// SentencePiece's decoding: markers to spaces, byte pieces to bytes (the prefix space is
// dropped by the tokenizer's strip_first_space).
std::shared_ptr<const Decoder> SentencePieceDecoder() {
  std::vector<std::unique_ptr<Decoder>> steps;
  steps.push_back(*MakeReplaceDecoder(kSpaceMarker, /*is_regex=*/false, " "));
  steps.push_back(MakeByteFallbackDecoder());
  steps.push_back(MakeFuseDecoder());
  return MakeDecoderSequence(std::move(steps));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const GgufFile& gguf,
                                                             const std::string& name) {
  const GgufValue* tokens = gguf.Find("tokenizer.ggml.tokens");
  auto model = gguf.GetString("tokenizer.ggml.model");
  if (tokens == nullptr || !model) return Invalid(name, "no tokenizer in GGUF metadata");
  TokenizerSpec spec;
  spec.pieces = tokens->strings;
  if (const GgufValue* types = gguf.Find("tokenizer.ggml.token_type")) {
    for (size_t i = 0; i < types->numbers.size() && i < spec.pieces.size(); ++i) {
      // llama.cpp's token types: unknown (2) and control (3) tokens are matched in the text
      // only when special tokens are parsed, user-defined ones (4) always.
      const int type = static_cast<int>(types->numbers[i]);
      if ((type == 2 || type == 3 || type == 4) && !spec.pieces[i].empty()) {
        AddedToken token;
        token.content = spec.pieces[i];
        token.id = static_cast<int>(i);
        token.special = type != 4;
        spec.added_tokens.push_back(std::move(token));
      }
    }
  }
  spec.bos_id = static_cast<int>(gguf.GetInt("tokenizer.ggml.bos_token_id").value_or(-1));
  spec.eos_id = static_cast<int>(gguf.GetInt("tokenizer.ggml.eos_token_id").value_or(-1));
  spec.unk_id = static_cast<int>(gguf.GetInt("tokenizer.ggml.unknown_token_id").value_or(-1));
  if (*model == "gpt2") {
    const std::string pre = gguf.GetString("tokenizer.ggml.pre").value_or("default");
    auto pre_tokenizer = MakeGgufPreTokenizer(pre);
    if (!pre_tokenizer.ok()) {
      return absl::UnimplementedError(
          absl::StrFormat("%s: %s", name, pre_tokenizer.status().message()));
    }
    spec.pre_tokenizer = std::move(*pre_tokenizer);
    spec.decoder = MakeByteLevelDecoder();
    spec.ignore_merges = GgufIgnoresMerges(pre);
    spec.add_bos = GgufIgnoresMerges(pre);  // llama.cpp's default for Llama 3; the file may say
    const GgufValue* merges = gguf.Find("tokenizer.ggml.merges");
    if (merges == nullptr) return Invalid(name, "gpt2 tokenizer without merges");
    for (const std::string& m : merges->strings) {
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) return Invalid(name, "merge without a space: " + m);
      spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
  } else if (*model == "llama") {
    const GgufValue* scores = gguf.Find("tokenizer.ggml.scores");
    if (scores == nullptr || scores->numbers.size() != spec.pieces.size()) {
      return Invalid(name, "llama tokenizer needs one score per token");
    }
    spec.scores.assign(scores->numbers.begin(), scores->numbers.end());
    spec.byte_fallback = true;
    const bool add_space_prefix = gguf.GetBool("tokenizer.ggml.add_space_prefix").value_or(true);
    // llama.cpp: a space before the text (and after each token cut out of it), then every
    // space as U+2581; the text is one word.
    std::vector<std::unique_ptr<Normalizer>> steps;
    if (add_space_prefix) steps.push_back(MakePrepend(kSpaceMarker));
    steps.push_back(*MakeReplace(" ", /*is_regex=*/false, kSpaceMarker));
    spec.normalizer = MakeNormalizerSequence(std::move(steps));
    spec.decoder = SentencePieceDecoder();
    spec.strip_first_space = add_space_prefix;
    spec.add_bos = true;
  } else {
    return absl::UnimplementedError(
        absl::StrFormat("%s: GGUF tokenizer model '%s' is not supported", name, *model));
  }
  spec.decode_added_tokens_raw = true;
  spec.add_bos = gguf.GetBool("tokenizer.ggml.add_bos_token").value_or(spec.add_bos);
  spec.add_eos = gguf.GetBool("tokenizer.ggml.add_eos_token").value_or(false);
  return Tokenizer::Create(std::move(spec));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizerFile(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  auto gguf = ParseGguf((*file)->bytes(), path);
  if (!gguf.ok()) return gguf.status();
  return LoadGgufTokenizer(*gguf, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path,
                                                                int vocab_size) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  ByteReader r((*file)->bytes(), path);
  int32_t max_len = 0;
  if (auto s = r.Read(&max_len, "max token length"); !s.ok()) return s;
  TokenizerSpec spec;
  spec.pieces.resize(vocab_size);
  spec.scores.resize(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    int32_t len = 0;
    if (auto s = r.Read(&spec.scores[i], "token score"); !s.ok()) return s;
    if (auto s = r.Read(&len, "token length"); !s.ok()) return s;
    if (len < 0 || static_cast<size_t>(len) > r.remaining()) {
      return Invalid(path, absl::StrFormat("token %d has length %d past the end", i, len));
    }
    std::string piece(reinterpret_cast<const char*>((*file)->data() + r.offset()), len);
    if (auto s = r.Skip(len, "token bytes"); !s.ok()) return s;
    // llama2.c writes SentencePiece's marker as a plain space; put it back.
    spec.pieces[i] = absl::StrReplaceAll(piece, {{" ", kSpaceMarker}});
  }
  spec.byte_fallback = true;
  // As the Hugging Face conversion of its SentencePiece model (Metaspace, prepend "first"),
  // which is this project's reference for token ids.
  spec.pre_tokenizer = MakeMetaspace(kSpaceMarker, PrependScheme::kFirst, /*split=*/false);
  spec.decoder = SentencePieceDecoder();
  spec.strip_first_space = true;
  spec.add_bos = true;
  spec.unk_id = 0;
  spec.bos_id = 1;
  spec.eos_id = 2;
  return Tokenizer::Create(std::move(spec));
}

}  // namespace superweight
