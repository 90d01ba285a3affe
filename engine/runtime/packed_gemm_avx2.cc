// The packed kernel at the engine's baseline ISA (x86-64-v3): its f32 FMA unit on 256-bit
// vectors (PackedUnit::kFmaAvx2), for the CPUs without AVX-512, and the activation budget every
// unit reads. Each block of 32 weight rows is converted to f32 and transposed into columns by the
// core that multiplies it, in its own cache, and used for every token of the pass: no slice of
// converted weights goes through memory, and the activations are read as they lie (oneDNN
// repacks them on every call).
#include <immintrin.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "engine/runtime/amx_gemm.h"
#include "engine/runtime/fast_math.h"

namespace superweight::internal {
namespace {

std::atomic<int64_t> chunk_bytes_for_tests{0};

// Transposes the 8x8 block of floats in r: r[i] holds column i afterwards.
inline void Transpose8(__m256 (&r)[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// Columns of a block's weights per step along k: k in equal steps (multiples of 32) whose
// packed columns (32 rows, each matrix) stay within 256 KiB, half a Zen 3 core's L2, while every
// token group of the pass reads them. Whole rows did not on the 1.1B (k = 5632: 704 KiB; gate
// and up at k = 2048: 512 KiB): its matmuls ran at 102-107 GFLOP/s against oneDNN's 110-119.
int64_t StepColumns(int64_t k, int count) {
  const int64_t most = (int64_t{256} << 10) / (32 * 4 * count);
  const int64_t steps = (k + most - 1) / most;
  return ((k + steps - 1) / steps + 31) / 32 * 32;
}

// Columns [c0, c0 + width) of 32 converted weight rows (k apart) as the unit's B operand: for
// each column c, the 32 rows' values at columns + 32 (c - c0).
void TransposeColumns(const float* rows, int64_t k, int64_t c0, int64_t width, float* columns) {
  for (int64_t c = 0; c < width; c += 8) {
    for (int g = 0; g < 4; ++g) {
      __m256 r[8];
      for (int q = 0; q < 8; ++q) r[q] = _mm256_load_ps(rows + (8 * g + q) * k + c0 + c);
      Transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_store_ps(columns + (c + i) * 32 + 8 * g, r[i]);
    }
  }
}

// The products of kTokens rows of x (ldx apart, from token t0) with 16 weight rows (half `half`
// of a step's columns, `width` of them) in 12 accumulators, summed along k in order into
// sums[token * 32 + row], which they continue where `resume` (a later step along k: an f32 sum
// stored and loaded back is the same sum). Each token's sums are the same whatever group and
// steps it is in, so a sequence scores alike alone and in a batch.
template <int kTokens>
inline void FmaGroup(int64_t t0, const float* x, int64_t ldx, int64_t width, const float* columns,
                     int half, bool resume, float* sums) {
  // Every loop over the tokens unrolled, so that the accumulators live in registers only (with
  // the first and last loops rolled GCC kept them in memory, storing all 12 every step).
  __m256 acc[kTokens][2];
#pragma GCC unroll 6
  for (int t = 0; t < kTokens; ++t) {
    const float* in = sums + (t0 + t) * 32 + 16 * half;
    acc[t][0] = resume ? _mm256_load_ps(in) : _mm256_setzero_ps();
    acc[t][1] = resume ? _mm256_load_ps(in + 8) : _mm256_setzero_ps();
  }
  const float* row = x + t0 * ldx;
  const float* b = columns + 16 * half;
  for (int64_t c = 0; c < width; ++c, b += 32) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int t = 0; t < kTokens; ++t) {
      const __m256 a = _mm256_broadcast_ss(row + t * ldx + c);
      acc[t][0] = _mm256_fmadd_ps(a, b0, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(a, b1, acc[t][1]);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < kTokens; ++t) {
    float* out = sums + (t0 + t) * 32 + 16 * half;
    _mm256_store_ps(out, acc[t][0]);
    _mm256_store_ps(out + 8, acc[t][1]);
  }
}

// A step's products for `tokens` (<= 32) tokens in groups of at most 6, none narrower than 4
// where there are that many (32 = 6 + 6 + 6 + 6 + 4 + 4): a group of 2 or 3 tokens has too few
// accumulators to cover the FMA's latency. The second half of the columns only where the block
// has more than 16 rows.
void FmaProducts(const float* x, int64_t ldx, int64_t width, const float* columns, int64_t tokens,
                 int64_t rows, bool resume, float* sums) {
  for (int half = 0; half < (rows > 16 ? 2 : 1); ++half) {
    for (int64_t t0 = 0; t0 < tokens;) {
      const int64_t left = tokens - t0;
      const int64_t group = left <= 6 ? left : left < 10 ? left - 4 : 6;
      // FmaGroup<n> for a group of n tokens.
      static constexpr void (*kGroupOf[])(int64_t, const float*, int64_t, int64_t, const float*,
                                          int, bool, float*) = {
          nullptr, FmaGroup<1>, FmaGroup<2>, FmaGroup<3>, FmaGroup<4>, FmaGroup<5>, FmaGroup<6>};
      kGroupOf[group](t0, x, ldx, width, columns, half, resume, sums);
      t0 += group;
    }
  }
}

// Every 32x32 block of products of `count` (1 or 2) matrices of the same shape, handed to
// finish(sums, t0, tokens, o0, rows) with matrix j's at sums + 1024 j, [token][32 rows]. Blocks
// of weight rows go to the threads one at a time, converted to f32 whole and transposed a step
// of columns at a time; tokens past the activation budget take further passes over the weights.
template <typename Finish>
void ForEachBlock(const AmxWeights* ws, int count, const AmxInput& x, Finish&& finish) {
  const int64_t m = x.m, k = x.k, token_blocks = (m + 31) / 32, row_blocks = (ws[0].rows + 31) / 32;
  const int64_t chunk_blocks = ActivationChunkBlocks(k, 4, PackedUnit::kFmaAvx2);
  const int64_t step = StepColumns(k, count);
#pragma omp parallel
  {
    thread_local CacheAlignedVector<float> converted, columns, sums;
    converted.resize(count * 32 * k);
    columns.resize(count * step * 32);
    // One block of sums per token block of the pass where k takes several steps, else one.
    sums.resize(count * 1024 * (step < k ? std::min(chunk_blocks, token_blocks) : 1));
    for (int64_t tb0 = 0; tb0 < token_blocks; tb0 += chunk_blocks) {
      const int64_t tb1 = std::min(token_blocks, tb0 + chunk_blocks);
#pragma omp for schedule(dynamic, 1)
      for (int64_t block = 0; block < row_blocks; ++block) {
        const int64_t o0 = block * 32, rows = std::min<int64_t>(32, ws[0].rows - o0);
        for (int j = 0; j < count; ++j) {
          float* dst = converted.data() + j * 32 * k;
          ws[j].convert_f32(o0, rows, dst);
          std::fill(dst + rows * k, dst + 32 * k, 0.f);  // the missing rows read as zeros
        }
        for (int64_t c0 = 0; c0 < k; c0 += step) {
          const int64_t width = std::min(step, k - c0);
          for (int j = 0; j < count; ++j) {
            TransposeColumns(converted.data() + j * 32 * k, k, c0, width,
                             columns.data() + j * step * 32);
          }
          const bool last = c0 + width == k;
          for (int64_t tb = tb0; tb < tb1; ++tb) {
            const int64_t t0 = tb * 32, tokens = std::min<int64_t>(32, m - t0);
            float* block_sums = sums.data() + (step < k ? (tb - tb0) * count * 1024 : 0);
            for (int j = 0; j < count; ++j) {
              FmaProducts(x.f32 + t0 * k + c0, k, width, columns.data() + j * step * 32, tokens,
                          rows, /*resume=*/c0 > 0, block_sums + 1024 * j);
            }
            if (last) finish(block_sums, t0, tokens, o0, rows);
          }
        }
      }
    }
  }
}

}  // namespace

void SetActivationChunkBytes(int64_t bytes) { chunk_bytes_for_tests = bytes; }

int64_t ActivationChunkBlocks(int64_t k, int64_t bytes_per_value, PackedUnit unit) {
  static const int64_t l2_bytes = [] {
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return reported > 0 ? std::clamp<int64_t>(reported, int64_t{256} << 10, int64_t{16} << 20)
                        : int64_t{2} << 20;
  }();
  const int64_t set = chunk_bytes_for_tests.load(std::memory_order_relaxed);
  const int64_t budget = set > 0 ? set : unit == PackedUnit::kTiles ? l2_bytes : 8 * l2_bytes;
  return std::max<int64_t>(1, budget / (32 * k * bytes_per_value));
}

void FmaAvx2Gemm(const AmxWeights& w, const AmxInput& x, float* y, int64_t ldy, bool add_to_y) {
  ForEachBlock(&w, 1, x,
               [&](const float* sums, int64_t t0, int64_t tokens, int64_t o0, int64_t rows) {
                 for (int64_t i = 0; i < tokens; ++i) {
                   const float* s = sums + i * 32;
                   float* out = y + (t0 + i) * ldy + o0;
                   if (add_to_y) {
#pragma omp simd
                     for (int64_t c = 0; c < rows; ++c) out[c] += s[c];
                   } else {
                     std::copy_n(s, rows, out);
                   }
                 }
               });
}

void FmaAvx2GemmSwiGlu(const AmxWeights& gate, const AmxWeights& up, const AmxInput& x, float* y,
                       int64_t ldy) {
  const AmxWeights both[2] = {gate, up};
  ForEachBlock(both, 2, x,
               [&](const float* sums, int64_t t0, int64_t tokens, int64_t o0, int64_t rows) {
                 for (int64_t i = 0; i < tokens; ++i) {
                   const float* g = sums + i * 32;
                   const float* u = g + 1024;
                   float* out = y + (t0 + i) * ldy + o0;
#pragma omp simd
                   for (int64_t c = 0; c < rows; ++c) out[c] = SwiGluOf(g[c], u[c]);
                 }
               });
}

}  // namespace superweight::internal
