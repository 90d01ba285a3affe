#include "cli/command_line.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace superweight::cli {

absl::StatusOr<CommandLine> Parse(
    int argc, char** argv, const std::map<std::string, std::vector<std::string>*>& repeated) {
  CommandLine line;
  bool flags_ended = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (flags_ended || arg.size() < 2 || arg[0] != '-') {
      line.positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_ended = true;
      continue;
    }
    absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
    const size_t eq = body.find('=');
    std::string name(body.substr(0, eq));
    const bool has_value = eq != absl::string_view::npos;
    std::string value(has_value ? body.substr(eq + 1) : "");
    if (name == "help" || name == "h" || name == "helpfull" || name == "helpshort") {
      line.help = true;
      continue;
    }
    if (name == "version" && !has_value) {
      line.version = true;
      continue;
    }
    // A value in the next argument; a boolean takes none that way (`--json models` is a verb).
    auto take_next = [&]() -> absl::Status {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " wants a value"));
      value = argv[++i];
      return absl::OkStatus();
    };
    if (auto list = repeated.find(name); list != repeated.end()) {
      if (!has_value) {
        if (absl::Status s = take_next(); !s.ok()) return s;
      }
      list->second->push_back(value);
      line.given.insert(name);
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") && !has_value) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
        value = "false";
      }
    } else if (flag != nullptr && !has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (absl::Status s = take_next(); !s.ok()) {
        return s;
      }
    }
    if (flag == nullptr || flag->IsRetired()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(error);  // it names the flag and the value
    }
    line.given.insert(name);
  }
  return line;
}

std::string FlagHelp(absl::string_view name, absl::string_view help) {
  std::string out = absl::StrCat("  --", name, " ");
  size_t column = out.size();
  const size_t kIndent = 6, kWidth = 100;
  for (absl::string_view word : absl::StrSplit(help, ' ', absl::SkipEmpty())) {
    if (column + 1 + word.size() > kWidth) {
      absl::StrAppend(&out, "\n", std::string(kIndent, ' '), word);
      column = kIndent + word.size();
    } else {
      absl::StrAppend(&out, " ", word);
      column += 1 + word.size();
    }
  }
  return out + "\n";
}

std::string FlagHelp(absl::string_view name) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr) return "";
  std::string help = flag->Help();
  const std::string default_value = flag->DefaultValue();
  // 0, false and "" mean "not given" here: the help says what the server does then.
  if (!default_value.empty() && default_value != "0" && default_value != "false") {
    absl::StrAppend(&help, " (default: ", default_value, ")");
  }
  return FlagHelp(name, help);
}

std::vector<std::string> FlagsDefinedIn(absl::string_view file_suffix) {
  std::vector<std::string> names;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::EndsWith(flag->Filename(), file_suffix)) names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace superweight::cli
