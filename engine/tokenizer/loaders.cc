// Builds TokenizerSpecs from the three places tokenizers live.
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/formats/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "engine/util/byte_reader.h"
#include "engine/util/mapped_file.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(const std::string& name, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s", name, msg));
}

// Collects normalizer steps this engine understands; anything else is refused.
absl::Status ApplyNormalizer(const Json& n, const std::string& name, TokenizerSpec* spec) {
  if (n.is_null()) return absl::OkStatus();
  const std::string type = n.value("type", "");
  if (type == "Sequence") {
    for (const Json& step : n.value("normalizers", Json::array())) {
      if (auto s = ApplyNormalizer(step, name, spec); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "Prepend" && n.value("prepend", "") == kSpaceMarker) {
    spec->prepend_space_marker = true;
    return absl::OkStatus();
  }
  if (type == "Replace" && n.contains("pattern") && n["pattern"].value("String", "") == " " &&
      n.value("content", "") == kSpaceMarker) {
    spec->spaces_to_marker = true;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrFormat("%s: unsupported normalizer %s", name, n.dump().substr(0, 200)));
}

absl::Status ApplyPreTokenizer(const Json& p, const std::string& name, TokenizerSpec* spec) {
  if (p.is_null()) return absl::OkStatus();
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const Json& step : p.value("pretokenizers", Json::array())) {
      if (auto s = ApplyPreTokenizer(step, name, spec); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel" && !p.value("add_prefix_space", false)) {
    spec->mode = TokenizerSpec::Mode::kByteLevel;
    if (p.value("use_regex", true)) spec->pre = TokenizerSpec::PreTokenizer::kGpt2Regex;
    return absl::OkStatus();
  }
  if (type == "Digits" && p.value("individual_digits", false)) {
    spec->split_digits = true;
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    spec->spaces_to_marker = true;
    const std::string scheme = p.value("prepend_scheme", "always");
    spec->prepend_space_marker = scheme != "never";
    spec->prepend_unless_leading_space = true;
    if (p.value("split", true)) spec->pre = TokenizerSpec::PreTokenizer::kMetaspaceSplit;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrFormat("%s: unsupported pre-tokenizer %s", name, p.dump().substr(0, 200)));
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
  if (!model.is_object() || model.value("type", "") != "BPE") {
    return absl::UnimplementedError(
        absl::StrFormat("%s: only BPE tokenizer models are supported", path));
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
  spec.byte_fallback = model.value("byte_fallback", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = vocab.find(model["unk_token"].get<std::string>());
    if (it != vocab.end()) spec.unk_id = it.value().get<int>();
  }
  if (auto s = ApplyNormalizer(root.value("normalizer", Json()), path, &spec); !s.ok()) return s;
  if (auto s = ApplyPreTokenizer(root.value("pre_tokenizer", Json()), path, &spec); !s.ok()) {
    return s;
  }
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const Json& a : root["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string()) {
        return Invalid(path, "malformed added token");
      }
      const int id = a["id"].get<int>();
      if (id < 0 || id >= (1 << 24)) return Invalid(path, "added token id out of range");
      const std::string content = a["content"].get<std::string>();
      if (id >= static_cast<int>(spec.pieces.size())) spec.pieces.resize(id + 1);
      spec.pieces[id] = content;
      // `tokenizers` matches a normalized added token by its normalized form, in the
      // normalized text: with a Prepend normalizer "<unk>" is found as "\u2581<unk>".
      std::string literal = content;
      if (a.value("normalized", false)) {
        if (spec.spaces_to_marker) literal = absl::StrReplaceAll(literal, {{" ", kSpaceMarker}});
        if (spec.prepend_space_marker) literal = kSpaceMarker + literal;
      }
      spec.added_tokens.emplace_back(literal, id);
    }
  }
  spec.bos_id = bos_id;
  spec.eos_id = eos_id;
  return Tokenizer::Create(std::move(spec));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const GgufFile& gguf,
                                                             const std::string& name) {
  const GgufValue* tokens = gguf.Find("tokenizer.ggml.tokens");
  auto model = gguf.GetString("tokenizer.ggml.model");
  if (tokens == nullptr || !model) return Invalid(name, "no tokenizer in GGUF metadata");
  TokenizerSpec spec;
  spec.pieces = tokens->strings;
  if (const GgufValue* types = gguf.Find("tokenizer.ggml.token_type")) {
    for (size_t i = 0; i < types->numbers.size() && i < spec.pieces.size(); ++i) {
      // Control (3) and user-defined (4) tokens are matched literally in the text.
      const int type = static_cast<int>(types->numbers[i]);
      if (type == 4 || (type == 3 && *model == "gpt2")) {
        spec.added_tokens.emplace_back(spec.pieces[i], static_cast<int>(i));
      }
    }
  }
  spec.bos_id = static_cast<int>(gguf.GetInt("tokenizer.ggml.bos_token_id").value_or(-1));
  spec.eos_id = static_cast<int>(gguf.GetInt("tokenizer.ggml.eos_token_id").value_or(-1));
  spec.unk_id = static_cast<int>(gguf.GetInt("tokenizer.ggml.unknown_token_id").value_or(-1));
  if (*model == "gpt2") {
    const std::string pre = gguf.GetString("tokenizer.ggml.pre").value_or("default");
    // Pre-tokenizers that use the GPT-2 pattern. Others (llama-bpe, qwen2, ...) use other
    // regexes and are refused rather than tokenized wrongly.
    if (pre != "default" && pre != "gpt2" && pre != "smollm" && pre != "gpt-2") {
      return absl::UnimplementedError(
          absl::StrFormat("%s: GGUF pre-tokenizer '%s' is not supported", name, pre));
    }
    spec.mode = TokenizerSpec::Mode::kByteLevel;
    spec.pre = TokenizerSpec::PreTokenizer::kGpt2Regex;
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
    spec.spaces_to_marker = true;
    spec.prepend_space_marker = gguf.GetBool("tokenizer.ggml.add_space_prefix").value_or(true);
  } else {
    return absl::UnimplementedError(
        absl::StrFormat("%s: GGUF tokenizer model '%s' is not supported", name, *model));
  }
  return Tokenizer::Create(std::move(spec));
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
  spec.spaces_to_marker = true;
  spec.prepend_space_marker = true;
  // As the Hugging Face conversion of its SentencePiece model (Metaspace, prepend "first"),
  // which is this project's reference for token ids.
  spec.prepend_unless_leading_space = true;
  spec.unk_id = 0;
  spec.bos_id = 1;
  spec.eos_id = 2;
  return Tokenizer::Create(std::move(spec));
}

}  // namespace superweight
