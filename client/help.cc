#include "client/help.h"

#include <algorithm>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/command_line.h"
#include "client/flags.h"

namespace superweight::client {
namespace {

// A group of flags in --help and the verbs that read them.
struct FlagGroup {
  std::string title;  // a verb's own group is titled "VERB: what it does"
  std::vector<std::string> verbs;
  std::vector<std::string> flags;
};

// The groups that several verbs share, then each verb's own.
const std::vector<FlagGroup>& FlagGroups() {
  static const auto* groups = [] {
    auto* groups = new std::vector<FlagGroup>{
        {"Every verb:", VerbNames(), {"server", "token_file", "ca_cert", "timeout"}},
        {"Every verb but health:",
         {"info", "models", "locate", "score", "ablate", "quantize", "check", "recipe", "jobs",
          "watch", "cancel"},
         {"json"}},
        {"Jobs (locate, score, ablate, quantize, check, recipe):",
         {"locate", "score", "ablate", "quantize", "check", "recipe"},
         {"model", "bf16", "no_wait", "request_id"}},
        {"Input (locate, score), one of:", {"locate", "score"}, {"text", "text_file", "token_ids"}},
        {"Evaluation windows (score, ablate, quantize, check, recipe):",
         {"score", "ablate", "quantize", "check", "recipe"},
         {"window", "max_windows"}},
        {"Evaluation tasks (ablate, quantize):", {"ablate", "quantize"}, {"tasks", "max_examples"}},
        {"Super weights given instead of located (ablate, quantize, check, recipe):",
         {"ablate", "quantize", "check", "recipe"},
         {"super_weights"}},
        {"Plots (locate, ablate, quantize):", {"locate", "ablate", "quantize"}, {"plot"}},
    };
    for (const Verb& v : Verbs()) {
      groups->push_back({absl::StrCat(v.name, ": ", v.summary), {v.name}, v.flags});
    }
    return groups;
  }();
  return *groups;
}

std::string GroupFlagHelp(const std::string& flag) {
  auto repeated = RepeatedFlagHelp().find(flag);
  return repeated != RepeatedFlagHelp().end() ? cli::FlagHelp(flag, repeated->second)
                                              : cli::FlagHelp(flag);
}

// The verbs that read `flag`; empty when no group lists it (then every verb may take it).
std::vector<std::string> VerbsReading(const std::string& flag) {
  std::vector<std::string> verbs;
  for (const FlagGroup& g : FlagGroups()) {
    if (std::find(g.flags.begin(), g.flags.end(), flag) == g.flags.end()) continue;
    for (const std::string& v : g.verbs) {
      if (std::find(verbs.begin(), verbs.end(), v) == verbs.end()) verbs.push_back(v);
    }
  }
  return verbs;
}

}  // namespace

void PrintHelp(const std::string& verb) {
  std::cout << "usage: superweight [--server=HOST:PORT] {" << absl::StrJoin(VerbNames(), "|")
            << "} [flags]\n       superweight --version\n";
  std::set<std::string> listed;
  for (const FlagGroup& g : FlagGroups()) {
    if (!verb.empty() && std::find(g.verbs.begin(), g.verbs.end(), verb) == g.verbs.end()) {
      continue;
    }
    std::cout << "\n" << g.title << "\n";
    for (const std::string& flag : g.flags) {
      std::cout << GroupFlagHelp(flag);
      listed.insert(flag);
    }
  }
  if (verb.empty()) {
    bool header = false;  // a flag added to the file but to no group still shows
    for (const std::string& flag : cli::FlagsDefinedIn(FlagsFile())) {
      if (listed.count(flag)) continue;
      if (!header) std::cout << "\nOther:\n";
      header = true;
      std::cout << GroupFlagHelp(flag);
    }
  }
  std::cout << "\nExit codes: 0 done; 1 the server refused or failed the call (its status on "
               "stderr), or a watched job ended FAILED or CANCELLED; 2 usage: a bad or "
               "contradictory flag, a file a flag names that cannot be read or written; 3 locate's "
               "--expect or check did not hold.\n";
}

absl::Status CheckFlagsFit(const Verb& verb, const std::set<std::string>& given) {
  auto error = [](auto... args) { return absl::InvalidArgumentError(absl::StrFormat(args...)); };
  for (const std::string& flag : given) {
    const std::vector<std::string> verbs = VerbsReading(flag);
    if (!verbs.empty() && std::find(verbs.begin(), verbs.end(), verb.name) == verbs.end()) {
      return error("--%s does not apply to %s (only to %s)", flag, verb.name,
                   absl::StrJoin(verbs, ", "));
    }
  }
  auto has = [&](const char* flag) { return given.count(flag) > 0; };
  if (has("text") + has("text_file") + has("token_ids") > 1) {
    return error("give one of --text, --text_file, --token_ids");
  }
  if (has("no_wait") && absl::GetFlag(FLAGS_no_wait)) {
    for (const char* flag : {"expect", "plot"}) {
      if (has(flag)) return error("--%s needs the result, and --no_wait returns before it", flag);
    }
  }
  return verb.check_flags != nullptr ? verb.check_flags(given) : absl::OkStatus();
}

}  // namespace superweight::client
