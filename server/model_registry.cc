#include "server/model_registry.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <functional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace superweight::server {
namespace {

std::string Canonical(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) != nullptr ? std::string(buf) : std::string();
}

bool IsModelDir(const std::string& path) {
  struct stat st;
  return ::stat((path + "/config.json").c_str(), &st) == 0;
}

// Inodes, sizes and modification times of the file, or of a model directory's files: what
// changes when a model is replaced, by a rename or in place.
std::string FileVersion(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  auto stamp = [](const struct stat& s) {
    return absl::StrFormat("%d:%d:%d.%09d;", s.st_ino, s.st_size, s.st_mtim.tv_sec,
                           s.st_mtim.tv_nsec);
  };
  if (!S_ISDIR(st.st_mode)) return stamp(st);
  std::vector<std::string> entries;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d)) {
      struct stat child;
      if (e->d_name[0] != '.' && ::stat((path + "/" + e->d_name).c_str(), &child) == 0 &&
          S_ISREG(child.st_mode)) {
        entries.push_back(std::string(e->d_name) + "=" + stamp(child));
      }
    }
    ::closedir(d);
  }
  std::sort(entries.begin(), entries.end());
  return absl::StrJoin(entries, "");
}

}  // namespace

ModelSummary Summarize(const Model& m) {
  ModelSummary s;
  s.display_name = m.name;
  s.format = ModelFormatName(m.format);
  s.architecture = ArchitectureName(m.config.arch);
  // A mixture of experts' down_proj is its experts' (a shared expert's may differ).
  s.weight_dtype =
      DTypeName(m.layers[0].Find(LinearKind::kDown, m.config.experts > 0 ? 0 : -1)->dtype);
  s.layers = m.config.layers;
  s.hidden = m.config.hidden;
  s.intermediate = m.config.experts > 0 ? m.config.expert_intermediate : m.config.intermediate;
  s.experts = m.config.experts;
  s.experts_per_token = m.config.experts_per_token;
  s.vocab = m.config.vocab;
  s.mapped_bytes = m.MappedBytes();
  return s;
}

ModelRegistry::ModelRegistry(std::string root, uint64_t budget_bytes)
    : root_(Canonical(root)), budget_(budget_bytes) {}

absl::StatusOr<std::string> ModelRegistry::Resolve(const std::string& name) const {
  if (name.empty()) return absl::InvalidArgumentError("no model given");
  if (name[0] == '/' || name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model '%s': give a path relative to the model root", name));
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrFormat("model '%s': '..' may not leave the model root", name));
    }
  }
  const std::string path = Canonical(root_ + "/" + name);
  if (path.empty()) return absl::NotFoundError(absl::StrFormat("model '%s' not found", name));
  if (path != root_ && !absl::StartsWith(path, root_ + "/")) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model '%s' lies outside the model root", name));
  }
  // A FIFO, socket or device is no model, and opening one could block.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model '%s' is not a regular file or a directory", name));
  }
  return path;
}

absl::StatusOr<std::shared_ptr<const Model>> ModelRegistry::Get(const std::string& name) {
  auto path = Resolve(name);
  if (!path.ok()) return path.status();
  // A model whose files changed since it was opened (replaced, rewritten, truncated) is
  // opened again: its old mapping may no longer match what the file holds. Handles already
  // given out keep the old mapping until they are released.
  const std::string version = FileVersion(*path);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = open_.find(*path);
    if (it != open_.end() && it->second.version == version) {
      lru_.remove(*path);
      lru_.push_front(*path);
      return it->second.model;
    }
    if (it != open_.end()) {
      open_.erase(it);
      lru_.remove(*path);
      ++reopened_;
    }
  }
  // Opening maps the file and builds the tokenizer: done outside the lock.
  auto model = Open(*path);
  if (!model.ok()) return model.status();
  std::shared_ptr<const Model> shared(std::move(*model));
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = open_.emplace(*path, OpenModelEntry{shared, version});
  if (inserted) lru_.push_front(*path);
  EvictLocked();
  return it->second.model;
}

uint64_t ModelRegistry::ReopenCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reopened_;
}

absl::StatusOr<std::unique_ptr<Model>> ModelRegistry::Open(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++opens_;
  }
  auto model = OpenModel(path);
  if (model.ok()) return model;
  // The engine names the absolute path; the client knows the model by its relative name.
  std::string msg(model.status().message());
  for (size_t pos; (pos = msg.find(root_ + "/")) != std::string::npos;)
    msg.erase(pos, root_.size() + 1);
  return absl::Status(model.status().code(), msg);
}

absl::StatusOr<ModelSummary> ModelRegistry::Describe(const std::string& name) {
  auto path = Resolve(name);
  if (!path.ok()) return path.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto open = open_.find(*path);
    if (open != open_.end()) {
      ModelSummary summary = Summarize(*open->second.model);
      summary.loaded = true;
      return summary;
    }
  }
  const std::string version = FileVersion(*path);  // only a closed model needs its files read
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto cached = summaries_.find(*path);
    if (cached != summaries_.end() && cached->second.version == version) {
      return cached->second.summary;
    }
  }
  auto model = Open(*path);  // closed again when this returns
  absl::StatusOr<ModelSummary> summary =
      model.ok() ? absl::StatusOr<ModelSummary>(Summarize(**model)) : model.status();
  std::lock_guard<std::mutex> lock(mu_);
  summaries_[*path] = CachedSummary{version, summary};
  return summary;
}

uint64_t ModelRegistry::OpenCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return opens_;
}

void ModelRegistry::EvictLocked() {
  uint64_t total = 0;
  for (const auto& [path, m] : open_) total += m.model->MappedBytes();
  // Least recently used first; a model some request still holds (use_count > 1) stays.
  for (auto it = lru_.rbegin(); it != lru_.rend() && total > budget_;) {
    auto m = open_.find(*it);
    if (m != open_.end() && m->second.model.use_count() == 1 && lru_.size() > 1) {
      total -= m->second.model->MappedBytes();
      open_.erase(m);
      it = std::list<std::string>::reverse_iterator(lru_.erase(std::next(it).base()));
    } else {
      ++it;
    }
  }
}

std::vector<std::string> ModelRegistry::Discover() const {
  std::vector<std::string> found;
  // Directories walked, by device and inode: a symlink back up the tree (a loop) or to a
  // directory already walked lists nothing twice.
  std::set<std::pair<dev_t, ino_t>> walked;
  std::function<void(const std::string&, int)> walk = [&](const std::string& rel, int depth) {
    const std::string dir = rel.empty() ? root_ : root_ + "/" + rel;
    if (!rel.empty() && IsModelDir(dir)) {
      found.push_back(rel);
      return;
    }
    if (depth > 4) return;
    struct stat dir_st;
    if (::stat(dir.c_str(), &dir_st) != 0 ||
        !walked.insert({dir_st.st_dev, dir_st.st_ino}).second) {
      return;
    }
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return;
    // Symlinks last, then by name: a directory reached twice is listed by its own name where it
    // can be, and always by the same one.
    std::vector<std::pair<bool, std::string>> entries;
    while (dirent* e = ::readdir(d)) {
      struct stat link;
      if (e->d_name[0] == '.') continue;
      const bool symlink =
          ::lstat((dir + "/" + e->d_name).c_str(), &link) == 0 && S_ISLNK(link.st_mode);
      entries.emplace_back(symlink, e->d_name);
    }
    ::closedir(d);
    std::sort(entries.begin(), entries.end());
    for (const auto& [symlink, name] : entries) {
      const std::string child = rel.empty() ? name : rel + "/" + name;
      struct stat st;
      if (::stat((root_ + "/" + child).c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        walk(child, depth + 1);
      } else if (S_ISREG(st.st_mode) &&
                 (absl::EndsWith(name, ".gguf") ||
                  (absl::EndsWith(name, ".bin") && !absl::StartsWith(name, "tok")))) {
        found.push_back(child);
      }
    }
  };
  walk("", 0);
  std::sort(found.begin(), found.end());
  return found;
}

int ModelRegistry::LoadedCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(open_.size());
}

uint64_t ModelRegistry::LoadedBytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t total = 0;
  for (const auto& [path, m] : open_) total += m.model->MappedBytes();
  return total;
}

}  // namespace superweight::server
