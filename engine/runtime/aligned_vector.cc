#include "engine/runtime/aligned_vector.h"

#include <sys/mman.h>

#include <cstddef>
#include <deque>
#include <iterator>
#include <mutex>

namespace superweight::internal {
namespace {

struct Mapping {
  void* start;
  std::size_t size;
};

struct KeptMappings {
  std::mutex mu;
  std::deque<Mapping> kept;  // oldest first
  std::size_t bytes = 0;
};

KeptMappings& Kept() {
  static auto* kept = new KeptMappings;  // never destroyed: freed vectors may outlive main
  return *kept;
}

}  // namespace

void* TakeKeptMapping(std::size_t size) {
  {
    KeptMappings& k = Kept();
    std::lock_guard<std::mutex> lock(k.mu);
    for (auto it = k.kept.rbegin(); it != k.kept.rend(); ++it) {  // the most recent first
      if (it->size != size) continue;
      void* start = it->start;
      k.bytes -= size;
      k.kept.erase(std::next(it).base());
      return start;
    }
  }
  // A size none has: passes of another shape follow, which would not take these either.
  ReleaseKeptMappings();
  return nullptr;
}

void KeepOrUnmap(void* p, std::size_t size) {
  if (size > kKeptMappingBytes) {
    munmap(p, size);
    return;
  }
  std::deque<Mapping> unmap;
  {
    KeptMappings& k = Kept();
    std::lock_guard<std::mutex> lock(k.mu);
    while (k.bytes + size > kKeptMappingBytes) {
      unmap.push_back(k.kept.front());
      k.bytes -= k.kept.front().size;
      k.kept.pop_front();
    }
    k.kept.push_back({p, size});
    k.bytes += size;
  }
  for (const Mapping& m : unmap) munmap(m.start, m.size);
}

void ReleaseKeptMappings() {
  std::deque<Mapping> unmap;
  {
    KeptMappings& k = Kept();
    std::lock_guard<std::mutex> lock(k.mu);
    unmap.swap(k.kept);
    k.bytes = 0;
  }
  for (const Mapping& m : unmap) munmap(m.start, m.size);
}

std::size_t KeptMappingBytes() {
  KeptMappings& k = Kept();
  std::lock_guard<std::mutex> lock(k.mu);
  return k.bytes;
}

}  // namespace superweight::internal

template class std::vector<float, superweight::internal::CacheLineAllocator<float>>;
template class std::vector<std::uint16_t, superweight::internal::CacheLineAllocator<std::uint16_t>>;
template class std::vector<std::uint32_t, superweight::internal::CacheLineAllocator<std::uint32_t>>;
