// The benchmarks' command lines: --name=value and bare --name (value "1"), from argv[first] on.
#pragma once

#include <map>
#include <string>

namespace superweight::bench {

inline std::map<std::string, std::string> ParseFlags(int argc, char** argv, int first) {
  std::map<std::string, std::string> flags;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    flags[a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2)] =
        eq == std::string::npos ? "1" : a.substr(eq + 1);
  }
  return flags;
}

}  // namespace superweight::bench
