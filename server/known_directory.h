// The built-in directory of published super-weight coordinates (data/known-super-weights.tsv,
// compiled into the server), and how a model is recognised in it.
#pragma once

#include <string>
#include <vector>

namespace superweight::server {

struct KnownSuperWeight {
  std::string model;  // Hugging Face id, e.g. huggyllama/llama-7b
  int layer;
  long row, col;
  std::string source;
};

const std::vector<KnownSuperWeight>& KnownSuperWeights();

// The directory's model id that `name` (a path or general.name) refers to, or "" if none:
// matched on the id's last part, case- and punctuation-insensitively.
std::string RecogniseModel(const std::string& name);

}  // namespace superweight::server
