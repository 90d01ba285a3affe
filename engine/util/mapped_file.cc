#include "engine/util/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/strings/str_format.h"

namespace superweight {
namespace {

// The guarded mappings, read by the SIGBUS handler: plain atomics in a fixed table, as a signal
// handler may take no lock and allocate nothing. A slot is free while its begin is zero.
struct GuardedRange {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<std::atomic<bool>*> faulted{nullptr};
};
constexpr int kMaxGuardedMappings = 1024;
GuardedRange guarded[kMaxGuardedMappings];
std::mutex guarded_mu;  // serializes claiming slots, not the handler
uintptr_t page_size = 4096;
struct sigaction previous_sigbus;

void OnSigbus(int signal, siginfo_t* info, void* context) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(info->si_addr);
  for (GuardedRange& range : guarded) {
    const uintptr_t begin = range.begin.load(std::memory_order_acquire);
    if (begin == 0 || address < begin) continue;
    const uintptr_t end = range.end.load(std::memory_order_acquire);
    if (address >= end) continue;
    // The file ends before this page now, and so before every later one: zeros from here to the
    // mapping's end let the faulting read, and any later one, complete. munmap of the whole
    // mapping still releases it all.
    const uintptr_t page = address & ~(page_size - 1);
    if (::mmap(reinterpret_cast<void*>(page), end - page, PROT_READ,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
      break;
    }
    range.faulted.load(std::memory_order_acquire)->store(true, std::memory_order_relaxed);
    return;
  }
  // Not a guarded mapping: what would have happened without this handler.
  if ((previous_sigbus.sa_flags & SA_SIGINFO) != 0 && previous_sigbus.sa_sigaction != nullptr) {
    previous_sigbus.sa_sigaction(signal, info, context);
    return;
  }
  if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
    previous_sigbus.sa_handler(signal);
    return;
  }
  struct sigaction fallback = {};
  fallback.sa_handler = SIG_DFL;
  ::sigaction(SIGBUS, &fallback, nullptr);  // the faulting instruction runs again and dies
}

void InstallSigbusHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    page_size = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction action = {};
    action.sa_sigaction = OnSigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &previous_sigbus);
  });
}

int GuardRange(const uint8_t* data, size_t size, std::atomic<bool>* faulted) {
  std::lock_guard<std::mutex> lock(guarded_mu);
  for (int i = 0; i < kMaxGuardedMappings; ++i) {
    GuardedRange& range = guarded[i];
    if (range.begin.load(std::memory_order_relaxed) != 0) continue;
    range.end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_relaxed);
    range.faulted.store(faulted, std::memory_order_relaxed);
    range.begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
    return i;
  }
  return -1;
}

bool SameTime(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const MappedFile>> MappedFile::Open(const std::string& path) {
  // O_NONBLOCK: a FIFO or device opens at once (and is refused below) instead of blocking.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrFormat("%s: cannot open: %s", path, std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a regular file", path));
  }
  size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    InstallSigbusHandler();
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrFormat("%s: mmap failed: %s", path, std::strerror(err)));
    }
    data = static_cast<const uint8_t*>(p);
  }
  std::shared_ptr<MappedFile> file(new MappedFile(path, fd, st, data, size));
  if (size > 0) {
    file->guard_slot_ = GuardRange(data, size, &file->faulted_);
    if (file->guard_slot_ < 0) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: more than %d files are mapped at once", path, kMaxGuardedMappings));
    }
  }
  return std::shared_ptr<const MappedFile>(std::move(file));
}

MappedFile::~MappedFile() {
  if (guard_slot_ >= 0) {
    std::lock_guard<std::mutex> lock(guarded_mu);
    guarded[guard_slot_].begin.store(0, std::memory_order_release);
  }
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  ::close(fd_);
}

absl::Status MappedFile::CheckUnchanged() const {
  struct stat now;
  if (::fstat(fd_, &now) != 0) {
    return absl::AbortedError(
        absl::StrFormat("%s: cannot check the mapped file: %s", path_, std::strerror(errno)));
  }
  const char* advice = "replace model files by rename, not in place, and run the work again";
  if (faulted() || now.st_size < opened_.st_size) {
    return absl::AbortedError(
        absl::StrFormat("%s was shortened in place (%d to %d bytes) while it was read; %s", path_,
                        opened_.st_size, now.st_size, advice));
  }
  if (now.st_size != opened_.st_size || !SameTime(now.st_mtim, opened_.st_mtim)) {
    return absl::AbortedError(
        absl::StrFormat("%s was rewritten in place while it was read; %s", path_, advice));
  }
  return absl::OkStatus();
}

}  // namespace superweight
