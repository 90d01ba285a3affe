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

// What ListModels shows of a model.
struct ModelSummary {
  std::string display_name, format, architecture, weight_dtype;
  int layers = 0, hidden = 0, intermediate = 0, vocab = 0;
  int experts = 0, experts_per_token = 0;  // 0: a dense model
  uint64_t mapped_bytes = 0;
  bool loaded = false;  // mapped by the registry when described
};
ModelSummary Summarize(const Model& m);

class ModelRegistry {
 public:
  ModelRegistry(std::string root, uint64_t budget_bytes);

  // A shared handle: the model stays open while any handle lives.
  absl::StatusOr<std::shared_ptr<const Model>> Get(const std::string& name);

  // Model files and directories under the root (not opened).
  std::vector<std::string> Discover() const;

  // The summary of a model, without keeping it open or touching the LRU: from the open model
  // if it is open (loaded = true), else from a short-lived open of its files. Cached per version of
  // the files (their sizes and modification times), so listing a root opens each model once, not on
  // every call; a broken file's error is cached the same way.
  absl::StatusOr<ModelSummary> Describe(const std::string& name);

  // OpenModel calls so far (for tests and metrics).
  uint64_t OpenCount() const;
  // Open models found changed on disk and opened again.
  uint64_t ReopenCount() const;
  int LoadedCount() const;
  uint64_t LoadedBytes() const;

  // The canonical absolute path of `name` if it lies inside the root.
  absl::StatusOr<std::string> Resolve(const std::string& name) const;

 private:
  void EvictLocked();
  // OpenModel with errors naming the model by its path under the root.
  absl::StatusOr<std::unique_ptr<Model>> Open(const std::string& path);

  std::string root_;  // canonical
  uint64_t budget_;
  mutable std::mutex mu_;
  std::list<std::string> lru_;  // front: most recently used
  struct OpenModelEntry {
    std::shared_ptr<const Model> model;
    std::string version;  // FileVersion when opened
  };
  std::map<std::string, OpenModelEntry> open_;
  uint64_t reopened_ = 0;
  struct CachedSummary {
    std::string version;
    absl::StatusOr<ModelSummary> summary;
  };
  std::map<std::string, CachedSummary> summaries_;  // by canonical path
  uint64_t opens_ = 0;
};

}  // namespace superweight::server
