// Vectors whose storage is aligned for the hardware that streams through it.
// - CacheAlignedVector starts a cache line. An AMX tile row is 64 bytes: at malloc's 16-byte
//   alignment three rows in four straddle two cache lines, and a tile load then reads twice the
//   lines it needs.
// - HugePageVector, from 1 MiB up, lies in 2 MiB pages where the kernel grants them (madvise).
//   A matmul writes its output 32 columns at a time down all rows, one row every few KiB: on
//   4 KiB pages each 32-row block touches up to 32 pages, more than the first-level TLB holds
//   alongside the operands' pages (SmolLM2 bf16 pass 1.15x with the gate/up outputs and the
//   logits on huge pages, about 1.05x more with every buffer of 1 MiB and more).
//   Freed mappings are kept for the next allocation of their size (KeepOrUnmap): a forward pass
//   maps its buffers afresh each call, and a new mapping costs page faults and the kernel's
//   zeroing of every page, serially on the calling thread.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

// Whether AddressSanitizer instruments this build: GCC says so with __SANITIZE_ADDRESS__, clang
// (before 21) only through __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define SUPERWEIGHT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SUPERWEIGHT_ASAN 1
#endif
#endif

namespace superweight::internal {

inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::size_t kHugePage = std::size_t{2} << 20;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}  // NOLINT: rebinding is implicit
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kCacheLine}));
  }
  void deallocate(T* p, std::size_t) { ::operator delete (p, std::align_val_t{kCacheLine}); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const {
    return true;
  }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const {
    return false;
  }
};

template <class T>
using CacheAlignedVector = std::vector<T, CacheLineAllocator<T>>;

// Mappings of whole huge pages that HugePageAllocator freed, kept for reuse by allocations of
// the same size (a pass of the same shape: the next setting's on the same batch): at most
// kKeptMappingBytes in all, the oldest unmapped first, and all of them as soon as a size none
// has is asked for (a pass of a new shape), so that what is kept beyond the pass that runs is
// about one pass's buffers. A process that is done with its passes for a while (a server
// between jobs) hands them back with ReleaseKeptMappings.
inline constexpr std::size_t kKeptMappingBytes = std::size_t{512} << 20;
// A kept mapping of exactly `size` bytes; else nullptr, and every kept mapping is unmapped.
void* TakeKeptMapping(std::size_t size);
void KeepOrUnmap(void* p, std::size_t size);
void ReleaseKeptMappings();
std::size_t KeptMappingBytes();

// Below 1 MiB a cache-aligned heap block; from 1 MiB a private mapping rounded up to whole
// 2 MiB pages (at most half of it unused) and aligned to one, advised as huge (where
// transparent huge pages are off it stays in 4 KiB pages and works the same). Under
// AddressSanitizer always the heap block, which the sanitizer watches.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}  // NOLINT: rebinding is implicit
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (!Mapped(bytes)) return CacheLineAllocator<T>().allocate(n);
    const std::size_t size = Rounded(bytes);
    if (void* kept = TakeKeptMapping(size)) return static_cast<T*>(kept);
    // Mapped one page over, so that an aligned start lies inside; the slack is unmapped.
    void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<std::uintptr_t>(raw);
    const std::uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
    if (aligned > start) munmap(raw, aligned - start);
    if (const std::size_t tail = kHugePage - (aligned - start); tail > 0) {
      munmap(reinterpret_cast<void*>(aligned + size), tail);
    }
    madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
    return reinterpret_cast<T*>(aligned);
  }
  void deallocate(T* p, std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (!Mapped(bytes)) {
      CacheLineAllocator<T>().deallocate(p, n);
    } else {
      KeepOrUnmap(p, Rounded(bytes));
    }
  }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const {
    return true;
  }
  template <class U>
  bool operator!=(const HugePageAllocator<U>&) const {
    return false;
  }

 private:
  static bool Mapped(std::size_t bytes) {
#if defined(SUPERWEIGHT_ASAN)
    return false;
#else
    return bytes >= kHugePage / 2;
#endif
  }
  static std::size_t Rounded(std::size_t bytes) {
    return (bytes + kHugePage - 1) & ~(kHugePage - 1);
  }
};

template <class T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace superweight::internal

// Instantiated once, in aligned_vector.cc at the engine's baseline flags: a file compiled for a
// wider ISA (the AVX-512 and AMX kernels) would otherwise emit copies of their members in that
// ISA, and the linker may keep such a copy for the whole program, which then faults (invalid
// opcode) on a lesser CPU.
extern template class std::vector<float, superweight::internal::CacheLineAllocator<float>>;
extern template class std::vector<std::uint16_t,
                                  superweight::internal::CacheLineAllocator<std::uint16_t>>;
extern template class std::vector<std::uint32_t,
                                  superweight::internal::CacheLineAllocator<std::uint32_t>>;
