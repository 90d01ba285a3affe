#include "client/verb.h"

namespace superweight::client {

const std::vector<Verb>& Verbs() {
  static const auto* verbs = new std::vector<Verb>{
      HealthVerb(),   InfoVerb(),  ModelsVerb(), LocateVerb(), ScoreVerb(), AblateVerb(),
      QuantizeVerb(), CheckVerb(), RecipeVerb(), JobsVerb(),   WatchVerb(), CancelVerb()};
  return *verbs;
}

std::vector<std::string> VerbNames() {
  std::vector<std::string> names;
  for (const Verb& v : Verbs()) names.push_back(v.name);
  return names;
}

const Verb* FindVerb(const std::string& name) {
  for (const Verb& v : Verbs()) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

}  // namespace superweight::client
