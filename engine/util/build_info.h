// What build this is: the version (CMake's project version, the one place it is set) and the git
// revision it was built from, for --version, the server's start-up line, its build_info metric
// and GetServerInfo.
#ifndef SUPERWEIGHT_ENGINE_UTIL_BUILD_INFO_H_
#define SUPERWEIGHT_ENGINE_UTIL_BUILD_INFO_H_

#include <string>
#include <string_view>

namespace superweight {

std::string_view Version();
// 12 hex digits, "-dirty" where the tree differed from them, or "unknown".
std::string_view GitRevision();

// "PROGRAM VERSION (git REVISION)", or "(git REVISION, CPU class ISA)" given the class the
// program's kernels run at: the line --version prints.
std::string VersionLine(std::string_view program, std::string_view cpu_class = {});

}  // namespace superweight

#endif  // SUPERWEIGHT_ENGINE_UTIL_BUILD_INFO_H_
