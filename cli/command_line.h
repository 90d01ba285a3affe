// The command line of superweight and superweightd: absl flags parsed without absl's exits, so
// that a usage error is the program's exit 2 (absl exits 1, which the client keeps for the
// server's refusal) and --help and --version are the program's own, exit 0.
#ifndef SUPERWEIGHT_CLI_COMMAND_LINE_H_
#define SUPERWEIGHT_CLI_COMMAND_LINE_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace superweight::cli {

struct CommandLine {
  std::vector<std::string> positional;  // the arguments that are not flags, argv[0] left out
  std::set<std::string> given;          // the flags named on the command line
  bool help = false;                    // --help, -h, --helpfull, --helpshort
  bool version = false;                 // --version
};

// Sets the registered absl flags the command line names: --name=value, --name value (not for
// booleans), --name and --noname (booleans), one dash or two; "--" ends the flags. `repeated`
// names flags that may be given many times, each value appended to its vector (absl's list flags
// split on commas, and a coordinate holds them). An unknown flag or a bad value is an error
// naming it.
absl::StatusOr<CommandLine> Parse(int argc, char** argv,
                                  const std::map<std::string, std::vector<std::string>*>& repeated);

// "  --name  help (default: value)", wrapped to 100 columns: a registered flag's entry in a
// --help listing.
std::string FlagHelp(absl::string_view name);

// The same entry for a flag absl does not hold (one of Parse's `repeated`).
std::string FlagHelp(absl::string_view name, absl::string_view help);

// The registered flags defined in a source file whose path ends with `file_suffix`, by name.
std::vector<std::string> FlagsDefinedIn(absl::string_view file_suffix);

}  // namespace superweight::cli

#endif  // SUPERWEIGHT_CLI_COMMAND_LINE_H_
