// The engine's packed matmul kernel: each block of 32 weight rows is read where it lies (bf16 in
// the mapped file) or dequantized by the core that uses it, transposed into a per-thread buffer
// and used for every token, so no weight is copied beyond one block per thread; each 32x32
// block of products goes, still in L1, to an epilogue (stored, added to y, SwiGLU, log-sum-exp).
// Four units multiply (PackedUnit): AMX tiles and AVX512-BF16's dot product (VDPBF16PS) take
// the weights as bf16 pairs along k by output and the activations as tile-ordered bf16 planes
// (16 tokens by 32 bf16 along k); f32 FMA, on AVX-512 or on AVX2, takes f32 weight columns and
// the activations as they lie.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/runtime/aligned_vector.h"

namespace superweight::internal {

// CpuAllows(Isa::kAmx) (cpu.h): whether the matmul and attention dispatchers take the AMX paths.
bool AmxEnabled();

// x[m, k] (f32) as the tiles' A operand, in the order the kernel reads it: per 32 tokens, per
// 32 columns, per part, a [32 tokens][32 columns] bf16 block (one stream for the prefetcher);
// tokens past m are zero. One part is x rounded to bf16; three are x's exact split into bf16
// terms (hi + mid + lo), which makes products with bf16 weights as exact as f32's. k must be a
// multiple of 32.
int64_t AmxPaddedTokens(int64_t m);
void AmxPackActivations(const float* x, int64_t m, int64_t k, int parts,
                        CacheAlignedVector<uint16_t>* planes);

// The sums of x over each 32 columns, in the planes' token order: [padded tokens / 32][k / 32]
// [32 tokens], zero past m. Weights with offsets (AmxWeights::decode) add offset * sum.
void AmxBlockSums(const float* x, int64_t m, int64_t k, CacheAlignedVector<float>* sums);

// What multiplies in the kernels below: AMX tiles or AVX512-BF16's dot product, both on the
// activation planes and bf16 weight pairs, or f32 FMA, on the activations as they lie and f32
// weight columns: AVX-512's (kFma), or AVX2's at the baseline (kFmaAvx2, packed_gemm_avx2.cc,
// which has FmaAvx2Gemm and FmaAvx2GemmSwiGlu below instead of the Amx* entry points). Every
// unit hands the same blocks of products to the same epilogues.
enum class PackedUnit { kTiles, kDots, kFma, kFmaAvx2 };

// Token blocks of 32 per pass over the weights, for rows of k values of bytes_per_value each:
// every block of weight rows streams all the activations of the pass through its core, and
// more tokens (a server batch, f32's three parts) take several passes, each packing the weights
// again. The tiles' passes are kept within a core's L2: f32 passes of 16 batched 128-token
// sequences ran 1.07-1.15x faster (four paired runs); bf16 and single 512-token sequences, whose
// planes mostly fit, unchanged. The vector units read their activations as broadcasts the
// prefetcher streams, and their packed weights are what must stay in L2: passes of 8 L2s (512
// tokens of the 1.1B in one) ran its bf16 pass 1.10x and its f32 pass 1.13x faster than passes
// of one (Zen 4, avx512_bf16). Defined at the baseline ISA.
int64_t ActivationChunkBlocks(int64_t k, int64_t bytes_per_value, PackedUnit unit);
// Sets the activation bytes of one pass instead (0 resets): tests set a few KiB so that small
// inputs take several passes.
void SetActivationChunkBytes(int64_t bytes);

// Linear calls served by `unit` so far, process-wide: tests check the path they mean ran.
int64_t PackedLinearCalls(PackedUnit unit);

// The activations of one call, as the kernels read them.
struct AmxInput {
  PackedUnit unit = PackedUnit::kTiles;
  const uint16_t* planes = nullptr;  // AmxPackActivations (tiles, dot products)
  int parts = 1;
  const float* f32 = nullptr;         // x[m, k] itself, rows k apart (FMA)
  int64_t m = 0, k = 0;               // tokens, columns (a multiple of 32)
  const float* block_sums = nullptr;  // AmxBlockSums; needed only by weights with offsets
};

// The weights of one AmxGemm: `rows` rows of k values, in one of three forms.
// - bf16 read in place where `in_place` is set (row_bytes apart);
// - otherwise (and for a last block of fewer than 32 rows) written as bf16 by
//   `convert(first_row, count, dst)` into a per-thread block, k values per row, just before the
//   tiles use it: dequantization happens in the cache of the core that reads it;
// - or, where `decode` is set (block-quantized weights in f32 precision), as exact integer codes
//   (bf16) with, per 32 columns, a scale and an offset: decode(first_row, count, codes, scale,
//   offset) writes count rows of k codes and scale[step * 32 + row], offset likewise, the
//   weight being scale * code + offset (DecodeRowToBlockCodes). Each 32-column step's tile
//   products are then scaled into f32 sums: one quant block per step, no weight rounded to
//   bf16. `offsets` says whether any offset can be nonzero (the input's block sums are read).
// The FMA unit reads neither: `convert_f32(first_row, count, dst)` writes count rows of k f32
// values, the weights as its arithmetic multiplies them.
struct AmxWeights {
  int64_t rows = 0;
  const uint16_t* in_place = nullptr;
  int64_t row_bytes = 0;
  std::function<void(int64_t, int64_t, uint16_t*)> convert;
  std::function<void(int64_t, int64_t, uint16_t*, float*, float*)> decode;
  bool offsets = false;
  std::function<void(int64_t, int64_t, float*)> convert_f32;
};

// y[t, o] (row stride ldy) = sum over parts and k of w[o, k] x_part[t, k], for t < x.m and
// o < w.rows. With add_to_y the sum is added to what y holds (y + sum, as a separate addition
// would round it).
void AmxGemm(const AmxWeights& w, const AmxInput& x, float* y, int64_t ldy, bool add_to_y = false);

// AmxGemm and AmxGemmSwiGlu on the AVX2 FMA unit, for x.unit == kFmaAvx2 (the Amx* entry points
// are AVX-512 code: matmul.cc calls these instead); the same products (the f32 weights of
// convert_f32 times x.f32, summed along k in order), so each token's sums do not depend on the
// batch it is in.
void FmaAvx2Gemm(const AmxWeights& w, const AmxInput& x, float* y, int64_t ldy, bool add_to_y);
void FmaAvx2GemmSwiGlu(const AmxWeights& gate, const AmxWeights& up, const AmxInput& x, float* y,
                       int64_t ldy);

// silu(x gate^T) * (x up^T), the SwiGLU of a gated MLP, into y (row stride ldy), from the
// products of both matrices for the same block of outputs in L1: the gate's and up's outputs
// never reach memory, only their SwiGLU does. gate and up have the same shape.
void AmxGemmSwiGlu(const AmxWeights& gate, const AmxWeights& up, const AmxInput& x, float* y,
                   int64_t ldy);

// The same products, never stored: for each token t < x.m, a shift at or below their maximum
// over the w.rows outputs (row_shift[t], within 16 of it), the sum of exp(product - shift)
// (row_sum[t]), and the product at output targets[t] (target[t], left as it is where
// targets[t] is outside [0, w.rows)). For an lm_head that is the log-softmax at the target,
// log p = target - row_shift - log(row_sum), without the [m, vocabulary] logits ever reaching
// memory.
void AmxGemmLogSumExp(const AmxWeights& w, const AmxInput& x, const int32_t* targets,
                      float* row_shift, double* row_sum, float* target);

}  // namespace superweight::internal
