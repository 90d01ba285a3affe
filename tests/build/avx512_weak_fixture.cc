// A wider-ISA object that breaks the rule isa_weak_symbols.sh checks: weak (template) functions
// compiled with AVX-512VL that use only ymm registers, in instructions that have no VEX form. The
// IsaObjects.CheckerFindsWeakEvexFunctions ctest runs the checker on it and expects it named.
#include <immintrin.h>

namespace superweight::fixture {

template <int kImmediate>
__m256i TernaryOnYmm(__m256i a, __m256i b, __m256i c) {
  return _mm256_ternarylogic_epi32(a, b, c, kImmediate);  // vpternlogd: EVEX only
}
template __m256i TernaryOnYmm<0x96>(__m256i, __m256i, __m256i);

template <int kBits>
__m256i RotateOnYmm(__m256i a) {
  return _mm256_rol_epi32(a, kBits);  // vprold: EVEX only
}
template __m256i RotateOnYmm<7>(__m256i);

}  // namespace superweight::fixture
