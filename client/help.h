// --help and the flags' applicability, both from one table: the groups of flags --help lists,
// each with the verbs that read it (the shared groups here, and each verb's own from Verbs()).
#ifndef SUPERWEIGHT_CLIENT_HELP_H_
#define SUPERWEIGHT_CLIENT_HELP_H_

#include <set>
#include <string>

#include "absl/status/status.h"
#include "client/verb.h"

namespace superweight::client {

// The flags, grouped by verb; only `verb`'s groups when one is given.
void PrintHelp(const std::string& verb);

// Flags that do nothing for `verb` (a flag given to a verb that reads it in no group is refused
// rather than ignored), or contradict each other: refused, never ignored.
absl::Status CheckFlagsFit(const Verb& verb, const std::set<std::string>& given);

}  // namespace superweight::client

#endif  // SUPERWEIGHT_CLIENT_HELP_H_
