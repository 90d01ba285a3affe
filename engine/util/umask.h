// The process's umask, for files and directories made with mkstemp/mkdtemp (0600/0700) that are
// meant to be read like any other.
#pragma once

#include <sys/types.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace superweight {

// Read from /proc, as umask(2) can only be read by changing it (racing other threads); 022
// where /proc is absent.
inline mode_t ProcessUmask() {
  mode_t umask_bits = 022;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0) {
      umask_bits = static_cast<mode_t>(std::strtoul(line.c_str() + 6, nullptr, 8));
      break;
    }
  }
  return umask_bits;
}

}  // namespace superweight
