#include "tools/tokenizer_verbs.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

using Json = nlohmann::json;

int Fail(const std::string& msg) {
  std::cerr << "error: " << msg << "\n";
  return 1;
}

bool Exists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace

int RunTokenizerVerb(const std::string& verb, const std::string& path,
                     const std::map<std::string, std::string>& flags) {
  const auto get = [&](const char* name) {
    auto it = flags.find(name);
    return it == flags.end() ? std::string() : it->second;
  };
  const auto flag = [&](const char* name, bool fallback) {
    return flags.count(name) ? get(name) == "1" : fallback;
  };
  const auto start = std::chrono::steady_clock::now();
  const auto ms_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
  };
  std::unique_ptr<Tokenizer> owned;
  std::unique_ptr<Model> model;
  const Tokenizer* tokenizer = nullptr;
  bool add_bos = false, add_eos = false;
  const bool is_dir = std::filesystem::is_directory(path);
  std::optional<absl::StatusOr<std::unique_ptr<Tokenizer>>> loaded;
  if (absl::EndsWith(path, ".gguf") && !is_dir) {
    loaded = LoadGgufTokenizerFile(path);
  } else if (absl::EndsWith(path, ".json") && !is_dir) {
    loaded = LoadHfTokenizer(path, -1, -1);
  } else if (is_dir && Exists(path + "/tokenizer.json") && !Exists(path + "/config.json")) {
    loaded = LoadHfTokenizer(path + "/tokenizer.json", -1, -1);
  }
  if (loaded.has_value()) {
    if (!loaded->ok()) return Fail(std::string(loaded->status().ToString()));
    owned = std::move(**loaded);
    tokenizer = owned.get();
    add_bos = tokenizer->add_bos();
    add_eos = tokenizer->add_eos();
  } else {
    auto opened = OpenModel(path);
    if (!opened.ok()) return Fail(std::string(opened.status().ToString()));
    model = std::move(*opened);
    if (model->tokenizer == nullptr) return Fail("model has no tokenizer");
    tokenizer = model->tokenizer.get();
    add_bos = model->config.add_bos;
  }
  EncodeOptions options;
  options.add_bos = flag("bos", add_bos);
  options.add_eos = flag("eos", add_eos);
  options.parse_special = flag("parse_special", false);
  Json out;
  if (verb == "detokenize") {
    std::vector<int32_t> ids;
    for (absl::string_view part : absl::StrSplit(get("ids"), ',', absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(part, &id)) return Fail("--ids wants comma-separated integers");
      ids.push_back(id);
    }
    out = {{"text", tokenizer->Decode(ids)}};
  } else if (flags.count("texts_json")) {
    std::ifstream f(get("texts_json"), std::ios::binary);
    Json texts = Json::parse(f, nullptr, false);
    if (texts.is_discarded() || !texts.is_array()) return Fail("--texts_json wants an array");
    out = {{"ids", Json::array()}, {"decoded", Json::array()}};
    for (const Json& t : texts) {
      if (!t.is_string()) return Fail("--texts_json wants an array of strings");
      auto ids = tokenizer->Tokenize(t.get<std::string>(), options);
      if (!ids.ok()) return Fail(std::string(ids.status().ToString()));
      out["ids"].push_back(*ids);
      out["decoded"].push_back(tokenizer->Decode(*ids));
    }
  } else {
    std::string text = get("text");
    if (flags.count("text_file")) {
      std::ifstream f(get("text_file"), std::ios::binary);
      if (!f) return Fail("cannot read " + get("text_file"));
      std::stringstream ss;
      ss << f.rdbuf();
      text = ss.str();
    }
    const double load_ms = ms_since(start);
    const auto encode_start = std::chrono::steady_clock::now();
    auto ids = tokenizer->Tokenize(text, options);
    const double encode_ms = ms_since(encode_start);
    if (!ids.ok()) return Fail(std::string(ids.status().ToString()));
    out = {{"ids", *ids}};
    if (flag("timing", false)) out["timing"] = {{"load_ms", load_ms}, {"encode_ms", encode_ms}};
    if (flag("decode", false)) out["decoded"] = tokenizer->Decode(*ids);
  }
  // Decoded text of arbitrary ids may hold invalid UTF-8: written with U+FFFD, not thrown on.
  std::cout << out.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
  return 0;
}

}  // namespace superweight
