// Publishing a written file or directory under its name: a rename that never replaces what is
// there, and staging names for work that is published later. Exports are written under a
// staging name in the directory they are published to and renamed as the last step of the work
// that made them, so a published name always holds a whole file that work vouched for, and a
// crash leaves only staging names, which a sweep removes.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace superweight {

// Every staging name starts with this (a dot: hidden from listings of models).
inline constexpr absl::string_view kStagingPrefix = ".superweight-staging-";

// A fresh name in dir to stage `name` under: kStagingPrefix, a random part, then name, so that
// it keeps name's extension. Nothing exists there yet (the random part makes a collision
// negligible; writers that create it exclusively refuse one anyway).
std::string StagingPath(const std::string& dir, const std::string& name);

// fsyncs a directory, making the entries made or renamed in it durable.
absl::Status SyncDirectory(const std::string& dir);

// Renames from to `to`, refusing (ALREADY_EXISTS) where `to` exists, atomically where the file
// system supports RENAME_NOREPLACE; then makes the rename durable (best effort).
absl::Status RenameWithoutReplacing(const std::string& from, const std::string& to);

// Removes a staged file or directory tree; best effort, for the failure paths.
void RemoveStaged(const std::string& path);

// Removes every entry of dir whose name starts with kStagingPrefix (what a killed process left);
// how many. Only its owner may call it: a live writer's staging would go too.
int SweepStaged(const std::string& dir);

}  // namespace superweight
