#include "engine/runtime/matmul.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "engine/formats/dequantize.h"
#include "engine/runtime/amx_gemm.h"
#include "engine/runtime/cpu.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace superweight {
namespace {

using dnnl::matmul;
using dnnl::memory;
using Dims = memory::dims;

dnnl::engine& Engine() {
  static dnnl::engine engine = [] {
    Cpu();  // caps oneDNN's ISA before its first primitive
    return dnnl::engine(dnnl::engine::kind::cpu, 0);
  }();
  return engine;
}

// Primitive creation costs about a millisecond; every distinct shape is built once. Callers
// get a copy (primitives are shared handles), so clearing the cache never pulls one from
// under a running call.
struct Key {
  std::vector<int64_t> v;
  bool operator<(const Key& o) const { return v < o.v; }
};

struct Cached {
  matmul primitive;
  memory::desc a, b, c;
};

// oneDNN reports failures by throwing dnnl::error; they end here as a Status.
absl::Status OneDnnError(const dnnl::error& e, const char* what) {
  const std::string message =
      absl::StrCat("oneDNN ", what, " failed on this CPU (", CpuDescription(), "): ", e.what());
  switch (e.status) {
    case dnnl_unimplemented:
      return absl::FailedPreconditionError(message);
    case dnnl_out_of_memory:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<Cached> GetPrimitive(memory::data_type type, const Dims& a_dims,
                                    const Dims& a_strides, const Dims& b_dims,
                                    const Dims& b_strides, const Dims& c_dims,
                                    const Dims& c_strides) {
  static std::mutex mu;
  static std::map<Key, Cached> cache;
  Key key;
  key.v.push_back(static_cast<int64_t>(type));
  for (const Dims* d : {&a_dims, &a_strides, &b_dims, &b_strides, &c_dims, &c_strides}) {
    key.v.push_back(static_cast<int64_t>(d->size()));
    key.v.insert(key.v.end(), d->begin(), d->end());
  }
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (cache.size() > 4096) cache.clear();  // bounded: token counts vary per request
  try {
    memory::desc a(a_dims, type, a_strides);
    memory::desc b(b_dims, type, b_strides);
    memory::desc c(c_dims, memory::data_type::f32, c_strides);
    matmul::primitive_desc pd(matmul::desc(a, b, c), Engine());
    return cache.emplace(key, Cached{matmul(pd), a, b, c}).first->second;
  } catch (const dnnl::error& e) {
    return OneDnnError(e, type == memory::data_type::bf16 ? "bf16 matmul" : "f32 matmul");
  }
}

absl::Status Run(const Cached& p, const void* a, const void* b, void* c) {
  try {
    dnnl::stream stream(Engine());
    memory am(p.a, Engine(), const_cast<void*>(a));
    memory bm(p.b, Engine(), const_cast<void*>(b));
    memory cm(p.c, Engine(), c);
    p.primitive.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return OneDnnError(e, "matmul execution");
  }
  return absl::OkStatus();
}

// y[m, n] (stride ldy) = x[m, k] * w[n, k]^T, w rows contiguous with stride k.
absl::Status Gemm(memory::data_type type, const void* x, int64_t m, int64_t k, const void* w,
                  int64_t n, float* y, int64_t ldy) {
  absl::StatusOr<Cached> p = GetPrimitive(type, {m, k}, {k, 1}, {k, n}, {1, k}, {m, n}, {ldy, 1});
  if (!p.ok()) return p.status();
  return Run(*p, x, w, y);
}

// Rows per converted slice: about 16 MiB of f32 weights. oneDNN repacks the activations on every
// call, so narrow slices cost: on the 1.1B at the avx2 cap, 16 MiB slices ran its matmuls at
// 199-202 GFLOP/s against 184-192 with 4 MiB (oneDNN alone: 202).
int64_t SliceRows(int64_t cols) { return std::max<int64_t>(16, (int64_t{4} << 20) / cols); }

std::atomic<int64_t> linear_nanos{0}, linear_flops{0}, linear_input_nanos{0};
std::atomic<int64_t> packed_linear_calls[4] = {0, 0, 0, 0};  // per PackedUnit

// Adds the scope's duration (and flops) to process-wide counters.
class ScopeTimer {
 public:
  explicit ScopeTimer(std::atomic<int64_t>* nanos, int64_t flops = 0)
      : nanos_(nanos), flops_(flops), start_(std::chrono::steady_clock::now()) {}
  ~ScopeTimer() {
    *nanos_ += std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now() - start_)
                   .count();
    linear_flops += flops_;
  }

 private:
  std::atomic<int64_t>* nanos_;
  int64_t flops_;
  std::chrono::steady_clock::time_point start_;
};

// A matmul's clock: started once its activations are in the form it reads (below), as oneDNN
// alone, the yardstick, is handed its input already in bf16.
class LinearTimer : public ScopeTimer {
 public:
  explicit LinearTimer(int64_t flops) : ScopeTimer(&linear_nanos, flops) {}
};

// Whether bf16 matmuls off AMX go to oneDNN's bf16 matmul. By default they do not: with
// AVX512-BF16 the engine's packed kernel runs them on its dot product, and below it the engine
// multiplies the values rounded to bf16 in f32 FMA (products of two bf16 values are exact in
// f32, so that is bf16 arithmetic with f32 accumulation, as oneDNN's). Below AVX-512 oneDNN 2.6
// has no bf16 matmul at all, and capped at avx512_bf16 on Sapphire Rapids its bf16 matmul ran at
// 232 GFLOP/s against its f32 one's 366 on SmolLM2's shapes (2 threads, weights prepacked).
// SUPERWEIGHT_ONEDNN_BF16=1 turns it on, for comparison; below AVX-512 oneDNN then refuses the
// request (FAILED_PRECONDITION), as tests show.
std::atomic<bool> onednn_bf16{[] {
  const char* v = std::getenv("SUPERWEIGHT_ONEDNN_BF16");
  return v != nullptr && std::string(v) == "1";
}()};

bool OneDnnBf16() { return onednn_bf16.load(std::memory_order_relaxed); }

// Whether the matmuls the FMA units serve off AMX (f32 arithmetic: f32 precision, and bf16 on
// values rounded to bf16 below AVX512-BF16) go to oneDNN's f32 matmul instead, the weights
// converted a slice at a time. By default they do not: the packed kernel converts each block of
// weight rows in the cache of the core that multiplies it and reads the activations as they
// lie, where oneDNN repacks them on every call. SUPERWEIGHT_ONEDNN_F32=1 turns it on, for
// comparison (bench/ablate_bench.py, superweight-bench-locate).
std::atomic<bool> onednn_f32{[] {
  const char* v = std::getenv("SUPERWEIGHT_ONEDNN_F32");
  return v != nullptr && std::string(v) == "1";
}()};

bool OneDnnF32() { return onednn_f32.load(std::memory_order_relaxed); }

// Block-quantized weights in f32 precision go to the AMX kernel as exact codes and scales
// (amx_gemm.h): three bf16 parts of x times integer codes are exact products, so f32 accuracy
// holds without an f32 copy of the weights or oneDNN's f32 matmul.
bool DecodedForAmx(const Matrix& w, Precision precision) {
  return precision == Precision::kF32 && HasBlockCodes(w.dtype);
}

}  // namespace

LinearStats GetLinearStats() {
  return {linear_nanos.load(), linear_flops.load(), linear_input_nanos.load()};
}
void ResetLinearStats() {
  linear_nanos = 0;
  linear_flops = 0;
  linear_input_nanos = 0;
}

const char* PrecisionName(Precision p) { return p == Precision::kF32 ? "f32" : "bf16"; }

bool internal::AmxEnabled() { return CpuAllows(Isa::kAmx); }
void internal::UseOneDnnBf16(bool use) { onednn_bf16 = use; }
void internal::UseOneDnnF32(bool use) { onednn_f32 = use; }
int64_t internal::PackedLinearCalls(PackedUnit unit) {
  return packed_linear_calls[static_cast<int>(unit)].load();
}
int64_t internal::AmxPaddedTokens(int64_t m) { return (m + 31) / 32 * 32; }

namespace {

// x[rows, cols] converted row by row into `out`, once (on the input's clock).
template <typename T>
const T* ConvertRowsOnce(const float* x, int64_t rows, int64_t cols,
                         void (*convert)(const float*, int64_t, T*), std::vector<T>* out,
                         bool* ready) {
  if (!*ready) {
    const ScopeTimer timer(&linear_input_nanos);
    out->resize(rows * cols);
    T* dst = out->data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) convert(x + r * cols, cols, dst + r * cols);
    *ready = true;
  }
  return out->data();
}

}  // namespace

const uint16_t* LinearInput::Bf16() const {
  return ConvertRowsOnce(f32, rows, cols, &FloatsToBFloat16, &storage_->bf16, &bf16_ready_);
}

const float* LinearInput::F32Operand() const {
  if (precision == Precision::kF32) return f32;
  return ConvertRowsOnce(f32, rows, cols, &FloatsToBFloat16Values, &storage_->bf16_values,
                         &widened_ready_);
}

int LinearInput::AmxParts() const { return precision == Precision::kBF16 ? 1 : 3; }

const uint16_t* LinearInput::AmxPlanes() const {
  if (!amx_ready_) {
    const ScopeTimer timer(&linear_input_nanos);
    internal::AmxPackActivations(f32, rows, cols, AmxParts(), &storage_->amx);
    amx_ready_ = true;
  }
  return storage_->amx.data();
}

const float* LinearInput::AmxBlockSums() const {
  if (!sums_ready_) {
    const ScopeTimer timer(&linear_input_nanos);
    internal::AmxBlockSums(f32, rows, cols, &storage_->amx_block_sums);
    sums_ready_ = true;
  }
  return storage_->amx_block_sums.data();
}

absl::Status Linear(const Matrix& w, const float* x, int64_t m, float* y, int64_t ldy,
                    Precision precision, LinearScratch* scratch) {
  return Linear(w, LinearInput(x, m, w.cols, precision, &scratch->input), y, ldy, scratch);
}

namespace {

// The unit of the packed kernel (amx_gemm.h) that serves w and x, or none (oneDNN then does).
// On AMX the tiles serve bf16 precision, and f32 precision on weights stored as bf16 or as block
// codes, where the exact three-part split of the input keeps f32's accuracy (every product is
// exact). Off AMX, AVX512-BF16's dot product serves bf16 precision (f32's three parts would take
// three dot products, 1.5x the arithmetic of f32 FMA), and f32 FMA the rest, AVX-512's or else
// AVX2's: f32, and bf16 on values rounded to bf16 below AVX512-BF16.
std::optional<internal::PackedUnit> PackedUnitFor(const Matrix& w, const LinearInput& x) {
  if (w.cols % 32 != 0) return std::nullopt;
  const bool bf16 = x.precision == Precision::kBF16;
  if (internal::AmxEnabled()) {
    // A transformed weight's values are no bf16 or block codes: AMX serves it in bf16 only.
    if (w.transform != nullptr && !bf16) return std::nullopt;
    if (bf16 || w.dtype == DType::kBF16 || DecodedForAmx(w, x.precision)) {
      return internal::PackedUnit::kTiles;
    }
    return std::nullopt;
  }
  if (bf16 && OneDnnBf16()) return std::nullopt;
  if (bf16 && CpuAllows(Isa::kAvx512Bf16)) return internal::PackedUnit::kDots;
  if (OneDnnF32()) return std::nullopt;
  return CpuAllows(Isa::kAvx512) ? internal::PackedUnit::kFma : internal::PackedUnit::kFmaAvx2;
}

// Row r of w as the f32 values a matmul reads: dequantized, transformed, and in bf16 precision
// rounded to bf16.
void WeightRowToFloats(const Matrix& w, int64_t r, bool bf16, float* dst) {
  if (w.transform == nullptr) {
    if (bf16) {
      DequantizeRowToBFloat16Values(w.dtype, w.Row(r), w.cols, dst);
    } else {
      DequantizeRow(w.dtype, w.Row(r), w.cols, dst);
    }
    return;
  }
  w.RowToFloat(r, dst);
  if (bf16) FloatsToBFloat16Values(dst, w.cols, dst);
}

// Row r of w in bf16.
void WeightRowToBFloat16(const Matrix& w, int64_t r, uint16_t* dst) {
  if (w.transform == nullptr) {
    DequantizeRowToBFloat16(w.dtype, w.Row(r), w.cols, dst);
    return;
  }
  thread_local std::vector<float> row;
  row.resize(w.cols);
  w.RowToFloat(r, row.data());
  FloatsToBFloat16(row.data(), w.cols, dst);
}

bool IsFma(internal::PackedUnit unit) {
  return unit == internal::PackedUnit::kFma || unit == internal::PackedUnit::kFmaAvx2;
}

// The activations a matmul reads, converted (bf16 rounding; for the packed kernel's tiles and
// dot products tile order and, where the weights have offsets, the sums over each 32 columns)
// on the input's clock, before the matmul's starts; for the packed kernel, as it reads them.
internal::AmxInput PrepareInput(const LinearInput& x, std::optional<internal::PackedUnit> unit,
                                bool block_sums) {
  internal::AmxInput input;
  if (!unit.has_value()) {
    if (x.precision == Precision::kBF16) x.Bf16();
    return input;
  }
  input.unit = *unit;
  input.m = x.rows;
  input.k = x.cols;
  if (IsFma(*unit)) {
    input.f32 = x.F32Operand();
    return input;
  }
  input.planes = x.AmxPlanes();
  input.parts = x.AmxParts();
  if (block_sums) input.block_sums = x.AmxBlockSums();
  return input;
}

// Whether the tiles read x's block sums for w: decoded weights whose offsets can be nonzero.
bool ReadsBlockSums(const Matrix& w, Precision precision, internal::PackedUnit unit) {
  return unit == internal::PackedUnit::kTiles && DecodedForAmx(w, precision) &&
         BlockCodesHaveOffsets(w.dtype);
}

internal::AmxWeights AmxWeightsOf(const Matrix& w, Precision precision, internal::PackedUnit unit) {
  internal::AmxWeights weights;
  weights.rows = w.rows;
  if (IsFma(unit)) {
    const bool bf16 = precision == Precision::kBF16;
    weights.convert_f32 = [&w, bf16](int64_t first, int64_t count, float* dst) {
      for (int64_t r = 0; r < count; ++r) WeightRowToFloats(w, first + r, bf16, dst + r * w.cols);
    };
    return weights;
  }
  if (unit == internal::PackedUnit::kTiles && DecodedForAmx(w, precision) &&
      w.transform == nullptr) {
    weights.offsets = BlockCodesHaveOffsets(w.dtype);
    weights.decode = [&w](int64_t first, int64_t count, uint16_t* codes, float* scale,
                          float* offset) {
      for (int64_t r = 0; r < count; ++r) {
        DecodeRowToBlockCodes(w.dtype, w.Row(first + r), w.cols, codes + r * w.cols, scale + r,
                              offset + r, 32);
      }
    };
    return weights;
  }
  if (w.dtype == DType::kBF16 && w.transform == nullptr) {
    weights.in_place = reinterpret_cast<const uint16_t*>(w.data);
    weights.row_bytes = static_cast<int64_t>(w.row_bytes);
  }
  weights.convert = [&w](int64_t first, int64_t count, uint16_t* dst) {
    for (int64_t r = 0; r < count; ++r) WeightRowToBFloat16(w, first + r, dst + r * w.cols);
  };
  return weights;
}

// The packed kernel's product of w and x into y (or added to y), on the input's unit.
void PackedGemm(const Matrix& w, const LinearInput& x, const internal::AmxInput& input, float* y,
                int64_t ldy, bool add_to_y) {
  ++packed_linear_calls[static_cast<int>(input.unit)];
  const internal::AmxWeights weights = AmxWeightsOf(w, x.precision, input.unit);
  if (input.unit == internal::PackedUnit::kFmaAvx2) {
    internal::FmaAvx2Gemm(weights, input, y, ldy, add_to_y);
  } else {
    internal::AmxGemm(weights, input, y, ldy, add_to_y);
  }
}

}  // namespace

absl::Status Linear(const Matrix& w, const LinearInput& x, float* y, int64_t ldy,
                    LinearScratch* scratch) {
  const int64_t k = w.cols, m = x.rows;
  if (m == 0) return absl::OkStatus();
  const std::optional<internal::PackedUnit> unit = PackedUnitFor(w, x);
  const internal::AmxInput input =
      PrepareInput(x, unit, unit.has_value() && ReadsBlockSums(w, x.precision, *unit));
  LinearTimer timer(2 * m * k * w.rows);
  if (unit.has_value()) {
    PackedGemm(w, x, input, y, ldy, /*add_to_y=*/false);
    return absl::OkStatus();
  }
  if (x.precision == Precision::kF32 || !OneDnnBf16()) {
    // f32, or bf16 as f32 arithmetic on bf16 values (x.F32Operand() rounds x where needed).
    const bool bf16 = x.precision == Precision::kBF16;
    if (w.dtype == DType::kF32 && !bf16 && w.transform == nullptr) {
      return Gemm(memory::data_type::f32, x.f32, m, k, w.data, w.rows, y, ldy);
    }
    const float* xf = x.F32Operand();
    const int64_t slice = std::min(w.rows, SliceRows(k));
    scratch->weights_f32.resize(slice * k);
    for (int64_t r0 = 0; r0 < w.rows; r0 += slice) {
      const int64_t rows = std::min(slice, w.rows - r0);
      float* dst = scratch->weights_f32.data();
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) WeightRowToFloats(w, r0 + r, bf16, dst + r * k);
      absl::Status status = Gemm(memory::data_type::f32, xf, m, k, dst, rows, y + r0, ldy);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  // bf16 on oneDNN: weights used in place when stored as bf16, else converted a slice at a time.
  if (w.dtype == DType::kBF16 && w.transform == nullptr) {
    return Gemm(memory::data_type::bf16, x.Bf16(), m, k, w.data, w.rows, y, ldy);
  }
  const int64_t slice = std::min(w.rows, SliceRows(k));
  scratch->weights_bf16.resize(slice * k);
  for (int64_t r0 = 0; r0 < w.rows; r0 += slice) {
    const int64_t rows = std::min(slice, w.rows - r0);
    uint16_t* b = scratch->weights_bf16.data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) WeightRowToBFloat16(w, r0 + r, b + r * k);
    absl::Status status = Gemm(memory::data_type::bf16, x.Bf16(), m, k, b, rows, y + r0, ldy);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

bool LinearAddTo(const Matrix& w, const LinearInput& x, float* y, int64_t ldy) {
  const std::optional<internal::PackedUnit> unit = PackedUnitFor(w, x);
  if (!unit.has_value()) return false;
  if (x.rows == 0) return true;
  const internal::AmxInput input = PrepareInput(x, unit, ReadsBlockSums(w, x.precision, *unit));
  LinearTimer timer(2 * x.rows * w.cols * w.rows);
  PackedGemm(w, x, input, y, ldy, /*add_to_y=*/true);
  return true;
}

bool LinearSwiGlu(const Matrix& gate, const Matrix& up, const LinearInput& x, float* y,
                  int64_t ldy) {
  const std::optional<internal::PackedUnit> unit = PackedUnitFor(gate, x);
  if (!unit.has_value() || PackedUnitFor(up, x) != unit || gate.rows != up.rows ||
      gate.cols != up.cols) {
    return false;
  }
  if (x.rows == 0) return true;
  const internal::AmxInput input = PrepareInput(
      x, unit, ReadsBlockSums(gate, x.precision, *unit) || ReadsBlockSums(up, x.precision, *unit));
  LinearTimer timer(2 * 2 * x.rows * gate.cols * gate.rows);
  packed_linear_calls[static_cast<int>(*unit)] += 2;
  const internal::AmxWeights gate_weights = AmxWeightsOf(gate, x.precision, *unit);
  const internal::AmxWeights up_weights = AmxWeightsOf(up, x.precision, *unit);
  if (*unit == internal::PackedUnit::kFmaAvx2) {
    internal::FmaAvx2GemmSwiGlu(gate_weights, up_weights, input, y, ldy);
  } else {
    internal::AmxGemmSwiGlu(gate_weights, up_weights, input, y, ldy);
  }
  return true;
}

bool LinearLogSumExp(const Matrix& w, const LinearInput& x, const int32_t* targets,
                     float* row_shift, double* row_sum, float* target) {
  const std::optional<internal::PackedUnit> unit = PackedUnitFor(w, x);
  // On the AVX2 unit the caller's slices of the vocabulary (through Linear) take its place.
  if (!unit.has_value() || *unit == internal::PackedUnit::kFmaAvx2) return false;
  if (x.rows == 0) return true;
  ++packed_linear_calls[static_cast<int>(*unit)];
  internal::AmxGemmLogSumExp(AmxWeightsOf(w, x.precision, *unit),
                             PrepareInput(x, unit, ReadsBlockSums(w, x.precision, *unit)), targets,
                             row_shift, row_sum, target);
  return true;
}

absl::Status GroupedMatmul(int64_t outer, int64_t inner, int64_t m, int64_t k, int64_t n,
                           StridedMatrix a, StridedMatrix b, float* c, int64_t c_outer_stride,
                           int64_t c_inner_stride, int64_t c_row_stride) {
  const absl::StatusOr<Cached> p =
      GetPrimitive(memory::data_type::f32, {outer, inner, m, k},
                   {a.outer_stride, a.inner_stride, a.row_stride, a.col_stride}, {outer, 1, k, n},
                   {b.outer_stride, k * n, b.row_stride, b.col_stride}, {outer, inner, m, n},
                   {c_outer_stride, c_inner_stride, c_row_stride, 1});
  if (!p.ok()) return p.status();
  return Run(*p, a.data, b.data, c);
}

}  // namespace superweight
