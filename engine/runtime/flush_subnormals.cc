#include "engine/runtime/flush_subnormals.h"

#include <xmmintrin.h>

namespace superweight {
namespace {

constexpr unsigned kFlushBits = 0x8040;  // MXCSR FTZ (bit 15) | DAZ (bit 6)

// Each thread's two flush bits before the scope (scopes nest: a forward pass inside scoring).
// Only these bits are restored, so a thread of a different team is never given a stranger's
// exception masks.
thread_local unsigned saved_flush_bits = 0;

}  // namespace

// Set in every thread of the team (GCC's libgomp keeps each thread's MXCSR), and again in the
// calling thread after the region: LLVM's libomp restores the caller's at the join (and hands
// it to the team at each fork instead).
ScopedFlushSubnormals::ScopedFlushSubnormals() {
#pragma omp parallel
  {
    const unsigned csr = _mm_getcsr();
    saved_flush_bits = csr & kFlushBits;
    _mm_setcsr(csr | kFlushBits);
  }
  _mm_setcsr(_mm_getcsr() | kFlushBits);
}

ScopedFlushSubnormals::~ScopedFlushSubnormals() {
#pragma omp parallel
  _mm_setcsr((_mm_getcsr() & ~kFlushBits) | saved_flush_bits);
  _mm_setcsr((_mm_getcsr() & ~kFlushBits) | saved_flush_bits);
}

}  // namespace superweight
