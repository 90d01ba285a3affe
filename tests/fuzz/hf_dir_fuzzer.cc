// libFuzzer target: a Hugging Face model directory as the server finds and opens one. The input
// is the directory's files separated by NUL bytes (which JSON never holds):
//
//   config.json \0 tokenizer.json \0 model.safetensors.index.json \0 weights
//
// An empty or absent part is a file not written. The weights, last since they are binary, are
// model.safetensors, or the shard model-00001-of-00001.safetensors where an index is given. The
// directory goes under a per-process model root and through the registry: listed (Discover),
// opened as every request opens it (Get), described as ListModels describes it, and its tokenizer
// run on a short text. (The loader reads no tokenizer_config.json, so none is written.)
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "server/model_registry.h"
#include "tests/fuzz/scratch_dir.h"

namespace superweight::server {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFiles[] = {"config.json", "tokenizer.json", "model.safetensors.index.json"};
constexpr const char* kWeights = "model.safetensors";
constexpr const char* kShard = "model-00001-of-00001.safetensors";

// The model root (a scratch directory) holds one model directory, rewritten for each input.
class ModelRoot {
 public:
  ModelRoot() : scratch_("hf-dir-fuzzer") { fs::create_directory(model_dir()); }
  const fs::path& root() const { return scratch_.path(); }
  fs::path model_dir() const { return root() / "model"; }

  void Write(const char* name, std::string_view bytes) const {
    fuzz::ScratchDir::WriteFile(model_dir() / name, bytes);
  }
  void Clear() const {
    for (const auto& entry : fs::directory_iterator(model_dir())) fs::remove(entry.path());
  }

 private:
  fuzz::ScratchDir scratch_;
};

void Exercise(const ModelRoot& root, std::string_view input) {
  root.Clear();
  std::vector<std::string_view> parts;
  for (size_t i = 0; i < 3; ++i) {
    const size_t nul = input.find('\0');
    if (nul == std::string_view::npos) break;
    parts.push_back(input.substr(0, nul));
    input.remove_prefix(nul + 1);
  }
  parts.push_back(input);
  for (size_t i = 0; i < parts.size() && i < 3; ++i) {
    if (!parts[i].empty()) root.Write(kFiles[i], parts[i]);
  }
  if (parts.size() == 4 && !parts[3].empty()) {
    root.Write(parts[2].empty() ? kWeights : kShard, parts[3]);
  }

  // A registry per input: its summaries are cached by file size and time, which a rewrite within
  // the file system's clock tick can leave unchanged.
  ModelRegistry registry(root.root().string(), uint64_t{1} << 32);
  for (const std::string& name : registry.Discover()) {
    auto model = registry.Get(name);
    if (!model.ok()) continue;
    auto summary = registry.Describe(name);
    if (!summary.ok() || !summary->loaded) abort();  // an open model describes itself
    if (const Tokenizer* t = (*model)->tokenizer.get()) {
      const std::vector<int32_t> ids =
          t->Encode("Once upon a time, <|start_story|> 123 ünïcödé\n", (*model)->config.add_bos);
      for (int32_t id : ids) {
        if (id < 0 || id >= (*model)->config.vocab) abort();  // ids the model can embed
      }
      t->Decode(ids);
    }
  }
}

}  // namespace
}  // namespace superweight::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const superweight::server::ModelRoot root;
  superweight::server::Exercise(root, std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
