#include "engine/util/build_info.h"

namespace superweight {

std::string VersionLine(std::string_view program, std::string_view cpu_class) {
  std::string line(program);
  line.append(" ").append(Version()).append(" (git ").append(GitRevision());
  if (!cpu_class.empty()) line.append(", CPU class ").append(cpu_class);
  return line.append(")");
}

}  // namespace superweight
