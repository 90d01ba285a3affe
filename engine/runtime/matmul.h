// Linear layers: y = x W^T with W in the Hugging Face [out, in] layout, never copied whole. The
// engine's packed kernel (amx_gemm.h) serves every matmul whose k is a multiple of 32: on AMX
// tiles bf16 precision, and f32 precision on bf16 weights and on block-quantized ones (as exact
// integer codes scaled per 32 columns); off AMX, AVX512-BF16's dot product bf16 precision and f32
// FMA the rest (AVX-512's, else AVX2's; f32, and bf16 on values rounded to bf16 below
// AVX512-BF16). Elsewhere (k not a multiple of 32, f32 weights and Q6_K/f16 in f32 on AMX, or
// UseOneDnnF32 below) oneDNN reads f32 weights in place from the memory map and other types
// converted a slice of rows at a time into a bounded scratch buffer; bf16 precision there is f32
// FMA on values rounded to bf16 (exact products, f32 sums). cpu.h decides the class.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/model.h"
#include "engine/runtime/aligned_vector.h"

namespace superweight {

enum class Precision { kF32, kBF16 };
const char* PrecisionName(Precision p);

// Where a LinearInput keeps its converted copies; one live LinearInput per storage.
struct LinearInputStorage {
  std::vector<uint16_t> bf16;
  std::vector<float> bf16_values;
  internal::CacheAlignedVector<uint16_t> amx;  // tile rows start cache lines
  internal::CacheAlignedVector<float> amx_block_sums;
};

// Per-forward-pass scratch: reused across the linear layers of one pass.
struct LinearScratch {
  std::vector<float> weights_f32;
  std::vector<uint16_t> weights_bf16;
  LinearInputStorage input;  // for inputs used once
};

// The input of one or more Linear calls: x[rows, cols] in f32, and the copies the matmuls read,
// made on first use and shared by every call on this input (q/k/v, gate/up and the lm_head's
// vocabulary slices each convert theirs once). Holds pointers: x and storage must outlive it
// and stay unchanged.
class LinearInput {
 public:
  LinearInput(const float* x, int64_t rows, int64_t cols, Precision precision,
              LinearInputStorage* storage)
      : f32(x), rows(rows), cols(cols), precision(precision), storage_(storage) {}
  // x rounded to bf16, [rows, cols].
  const uint16_t* Bf16() const;
  // What an f32 matmul reads for this precision: x itself in f32; in bf16, x rounded to bf16
  // values held as floats (bf16 arithmetic on f32 FMA units, where no bf16 matmul serves).
  const float* F32Operand() const;
  // x as the AMX kernel's activation planes (amx_gemm.h), AmxParts() of them: one part in bf16
  // precision, three (an exact split) in f32 precision.
  const uint16_t* AmxPlanes() const;
  int AmxParts() const;
  // x's sums over each 32 columns, for block-quantized weights with offsets (amx_gemm.h).
  const float* AmxBlockSums() const;

  const float* f32;
  int64_t rows, cols;
  Precision precision;

 private:
  LinearInputStorage* storage_;
  mutable bool bf16_ready_ = false, widened_ready_ = false, amx_ready_ = false, sums_ready_ = false;
};

// y[x.rows, ldy] = x * w^T; x.cols == w.cols. Columns [0, w.rows) of each y row are written.
// Fails only where oneDNN refuses or fails the matmul (FAILED_PRECONDITION where this CPU class
// lacks what it needs, RESOURCE_EXHAUSTED for memory, INTERNAL otherwise); y is then undefined.
absl::Status Linear(const Matrix& w, const LinearInput& x, float* y, int64_t ldy,
                    LinearScratch* scratch);
// The same for an input used once.
absl::Status Linear(const Matrix& w, const float* x, int64_t m, float* y, int64_t ldy,
                    Precision precision, LinearScratch* scratch);

// y[x.rows, ldy] += x * w^T, each output added to y as it leaves the tiles (a residual
// connection without the output ever stored on its own; y + output rounds as a separate
// addition would). Served where the packed kernel serves Linear(w, x); elsewhere returns false
// having computed nothing.
bool LinearAddTo(const Matrix& w, const LinearInput& x, float* y, int64_t ldy);

// y[x.rows, ldy] = silu(x gate^T) * (x up^T), the SwiGLU of a gated MLP, from both products of
// each block of outputs while they are in cache: the gate's and up's outputs never reach
// memory. Served where the packed kernel serves Linear on both; elsewhere returns false having
// computed nothing. Counted in LinearStats as the two matmuls (the SwiGLU's arithmetic in).
bool LinearSwiGlu(const Matrix& gate, const Matrix& up, const LinearInput& x, float* y,
                  int64_t ldy);

// For each row r of x, over the outputs of x w^T without storing them: a shift at or below
// their maximum (row_shift[r]), the sum of exp(output - shift) (row_sum[r]), so that their
// log-sum-exp is row_shift[r] + log(row_sum[r]), and the output at column targets[r]
// (target[r], left as it is where targets[r] is outside [0, w.rows)). Served where
// the packed kernel serves Linear(w, x); elsewhere returns false having computed nothing, and the
// caller computes the outputs with Linear (so on the AVX2 unit, which has no such epilogue).
// Not counted in LinearStats: its time is a
// log-softmax's as much as a matmul's.
bool LinearLogSumExp(const Matrix& w, const LinearInput& x, const int32_t* targets,
                     float* row_shift, double* row_sum, float* target);

// Time spent in the matmuls of Linear(), LinearAddTo() and LinearSwiGlu() (weight conversion
// included) and the flops they did, process-wide, and apart from it the time spent converting
// their activations (bf16 rounding, tile order), which oneDNN alone, the yardstick, is spared:
// benchmarks read these to compare the engine's matmul throughput with oneDNN's alone.
struct LinearStats {
  int64_t nanos = 0;
  int64_t flops = 0;
  int64_t input_nanos = 0;
};
LinearStats GetLinearStats();
void ResetLinearStats();

namespace internal {
// bf16 matmuls off the AMX path on oneDNN's bf16 matmul (as SUPERWEIGHT_ONEDNN_BF16=1 sets)
// instead of f32 FMA on bf16 values; below AVX-512 oneDNN refuses them.
void UseOneDnnBf16(bool use);
// The FMA units' matmuls off AMX (f32 arithmetic) on oneDNN's f32 matmul, weights converted a
// slice at a time (as SUPERWEIGHT_ONEDNN_F32=1 sets), instead of the packed kernel.
void UseOneDnnF32(bool use);
}  // namespace internal

// Plain f32 matmul over two batch dimensions with explicit strides (attention):
// for (i, j) in [0, outer) x [0, inner): C_ij[M, N] = A_ij[M, K] * B_i[K, N]; B is shared across
// the inner dimension (grouped-query attention: one KV head per group of query heads).
struct StridedMatrix {
  const float* data;
  int64_t outer_stride, inner_stride, row_stride, col_stride;
};
absl::Status GroupedMatmul(int64_t outer, int64_t inner, int64_t m, int64_t k, int64_t n,
                           StridedMatrix a, StridedMatrix b, float* c, int64_t c_outer_stride,
                           int64_t c_inner_stride, int64_t c_row_stride);

}  // namespace superweight
