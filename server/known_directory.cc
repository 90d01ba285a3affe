#include "server/known_directory.h"

#include <cctype>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace superweight::server {

extern const char kKnownSuperWeightsTsv[];  // generated from data/known-super-weights.tsv

namespace {

std::string Squash(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) out.push_back(std::tolower(c));
  }
  return out;
}

}  // namespace

const std::vector<KnownSuperWeight>& KnownSuperWeights() {
  static const auto* table = [] {
    auto* t = new std::vector<KnownSuperWeight>;
    for (absl::string_view line : absl::StrSplit(kKnownSuperWeightsTsv, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, '\t');
      KnownSuperWeight k;
      if (f.size() < 4 || f[0] == "model" || !absl::SimpleAtoi(f[1], &k.layer) ||
          !absl::SimpleAtoi(f[2], &k.row) || !absl::SimpleAtoi(f[3], &k.col)) {
        continue;
      }
      k.model = f[0];
      k.source = f.size() > 4 ? f[4] : "";
      t->push_back(k);
    }
    return t;
  }();
  return *table;
}

std::string RecogniseModel(const std::string& name) {
  const std::string squashed = Squash(name);
  std::string best;
  for (const auto& k : KnownSuperWeights()) {
    const std::string id = Squash(k.model.substr(k.model.find('/') + 1));
    // The longest matching id wins: "llama-13b" must not be taken for "llama-1"-something.
    if (!id.empty() && squashed.find(id) != std::string::npos && id.size() > Squash(best).size()) {
      best = k.model;
    }
  }
  return best;
}

}  // namespace superweight::server
