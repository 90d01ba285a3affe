// The models a server has open: addressed by their path relative to the model root (nothing
// outside it can be opened, through ".." or symlinks), opened on first use by the engine's
// memory map, shared by every request, evicted least-recently-used past a memory budget, never
// while a request holds them.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace superweight::server {

class ModelRegistry {
 public:
  ModelRegistry(std::string root, uint64_t budget_bytes);

  // A shared handle: the model stays open while any handle lives.
  absl::StatusOr<std::shared_ptr<const Model>> Get(const std::string& name);

  // Model files and directories under the root (not opened).
  std::vector<std::string> Discover() const;
  bool IsLoaded(const std::string& name) const;
  int LoadedCount() const;
  uint64_t LoadedBytes() const;

  // The canonical absolute path of `name` if it lies inside the root.
  absl::StatusOr<std::string> Resolve(const std::string& name) const;

 private:
  void EvictLocked();

  std::string root_;  // canonical
  uint64_t budget_;
  mutable std::mutex mu_;
  std::list<std::string> lru_;  // front: most recently used
  std::map<std::string, std::shared_ptr<const Model>> open_;
};

}  // namespace superweight::server
