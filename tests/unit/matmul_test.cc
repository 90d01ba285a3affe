#include "engine/runtime/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/formats/dequantize.h"
#include "engine/runtime/aligned_vector.h"
#include "engine/runtime/amx_gemm.h"
#include "engine/runtime/cpu.h"
#include "engine/runtime/fast_math.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::matmul_test {
namespace {

// Weights of a given type with ordinary random values, kept alive with their Matrix view.
struct Weights {
  std::vector<uint8_t> bytes;
  Matrix matrix;
};

Weights RandomWeights(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  Weights w;
  if (dtype == DType::kF32) {
    w.bytes.resize(rows * cols * 4);
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float v = normal(gen);
      std::memcpy(&w.bytes[4 * i], &v, 4);
    }
  } else if (dtype == DType::kBF16) {
    w.bytes.resize(rows * cols * 2);
    for (int64_t i = 0; i < rows * cols; ++i) {
      const uint16_t b = FloatToBFloat16(normal(gen));
      std::memcpy(&w.bytes[2 * i], &b, 2);
    }
  } else {  // random quants with ordinary f16 scales (~0.008-0.016) and minimums (about -0.01)
    struct HalfField {
      int offset;
      uint16_t base;
    };
    HalfField fields[2] = {};
    int field_count = 0;
    switch (dtype) {
      case DType::kQ4_0:
      case DType::kQ5_0:
      case DType::kQ8_0:
        fields[field_count++] = {0, 0x2000};
        break;
      case DType::kQ4_1:
      case DType::kQ5_1:
        fields[field_count++] = {0, 0x2000};
        fields[field_count++] = {2, 0xA000};
        break;
      case DType::kQ4_K:
      case DType::kQ5_K:  // d and dmin (subtracted)
        fields[field_count++] = {0, 0x2000};
        fields[field_count++] = {2, 0x2000};
        break;
      case DType::kQ6_K:
        fields[field_count++] = {208, 0x2000};
        break;
      default:
        ADD_FAILURE() << "no random weights for " << DTypeName(dtype);
    }
    const int64_t block_bytes = Traits(dtype).block_bytes;
    w.bytes.resize(*StorageBytes(dtype, rows * cols));
    for (uint8_t& byte : w.bytes) byte = static_cast<uint8_t>(gen());
    for (size_t b = 0; b < w.bytes.size(); b += block_bytes) {
      for (int i = 0; i < field_count; ++i) {
        const HalfField& f = fields[i];
        const uint16_t half = f.base + static_cast<uint16_t>(gen() % 0x400);
        std::memcpy(&w.bytes[b + f.offset], &half, 2);
      }
    }
  }
  w.matrix = Matrix::Make(dtype, rows, cols, w.bytes.data());
  return w;
}

struct Case {
  DType dtype;
  Precision precision;
  int64_t m, k, n, ldy;
};

// Runs Linear on a y wider than the output (ldy > n) filled with a sentinel, and checks every
// element against the definition in double: inputs (and weights, in bf16 precision) rounded to
// bf16 where the precision says so, products summed in f32's accuracy; columns past n untouched.
void CheckLinear(const Case& c) {
  SCOPED_TRACE(::testing::Message() << DTypeName(c.dtype) << " " << PrecisionName(c.precision)
                                    << " m=" << c.m << " k=" << c.k << " n=" << c.n);
  const Weights w = RandomWeights(c.dtype, c.n, c.k, 7);
  std::mt19937 gen(11);
  std::normal_distribution<float> normal;
  std::vector<float> x(c.m * c.k);
  for (float& v : x) v = normal(gen);
  constexpr float kSentinel = -12345.f;
  std::vector<float> y(c.m * c.ldy, kSentinel);
  LinearScratch scratch;
  ASSERT_TRUE(Linear(w.matrix, x.data(), c.m, y.data(), c.ldy, c.precision, &scratch).ok());
  const bool bf16 = c.precision == Precision::kBF16;
  auto round = [&](float v) { return bf16 ? BFloat16ToFloat(FloatToBFloat16(v)) : v; };
  for (int64_t t = 0; t < c.m; ++t) {
    for (int64_t o = 0; o < c.n; ++o) {
      double sum = 0, magnitude = 0;
      for (int64_t i = 0; i < c.k; ++i) {
        const double p = double{round(w.matrix.At(o, i))} * round(x[t * c.k + i]);
        sum += p;
        magnitude += std::fabs(p);
      }
      ASSERT_NEAR(y[t * c.ldy + o], sum, 2e-6 * magnitude + 1e-6) << "t=" << t << " o=" << o;
    }
    for (int64_t o = c.n; o < c.ldy; ++o) ASSERT_EQ(y[t * c.ldy + o], kSentinel);
  }
}

const Case kCases[] = {
    // Token and output counts off the 32-blocks (edges), one token, strided output.
    {DType::kBF16, Precision::kBF16, 45, 96, 70, 75},
    {DType::kBF16, Precision::kBF16, 1, 64, 33, 33},
    {DType::kBF16, Precision::kBF16, 64, 32, 64, 64},
    {DType::kQ8_0, Precision::kBF16, 37, 128, 40, 48},
    // The 4-bit block formats (SmolLM2's Q4_1), whole and short last blocks of rows.
    {DType::kQ4_0, Precision::kBF16, 37, 128, 64, 64},
    {DType::kQ4_1, Precision::kBF16, 45, 96, 70, 75},
    {DType::kQ4_1, Precision::kBF16, 100, 576, 192, 192},
    // f32 precision on bf16 weights: AMX with the input split exactly into three bf16 parts.
    {DType::kBF16, Precision::kF32, 45, 96, 70, 75},
    {DType::kBF16, Precision::kF32, 100, 576, 192, 192},
    // f32 precision on block-quantized weights: AMX on exact codes, scaled per 32 columns.
    {DType::kQ8_0, Precision::kF32, 33, 64, 31, 31},
    {DType::kQ4_1, Precision::kF32, 45, 96, 70, 75},
    {DType::kQ4_1, Precision::kF32, 100, 576, 192, 192},
    {DType::kQ4_0, Precision::kF32, 37, 128, 64, 64},
    {DType::kQ5_1, Precision::kF32, 40, 64, 33, 33},
    {DType::kQ4_K, Precision::kF32, 33, 512, 40, 40},
    {DType::kQ5_K, Precision::kF32, 20, 256, 33, 35},
    // Q6_K's scales change every 16 columns: no codes form for the tiles (oneDNN on AMX).
    {DType::kQ6_K, Precision::kF32, 20, 256, 33, 35},
    // Long inputs and long rows, edges included.
    {DType::kBF16, Precision::kF32, 300, 2080, 40, 45},
    {DType::kQ8_0, Precision::kBF16, 100, 2048, 33, 33},
    {DType::kQ8_0, Precision::kBF16, 1100, 1024, 33, 33},
    // Fewer tokens than a group of 8, and a group and a few (the last group as wide as they are).
    {DType::kQ4_1, Precision::kF32, 10, 576, 70, 75},
    {DType::kBF16, Precision::kF32, 5, 64, 33, 40},
    {DType::kQ8_0, Precision::kBF16, 11, 128, 40, 40},
    {DType::kF32, Precision::kF32, 10, 64, 512, 512},
    {DType::kF32, Precision::kBF16, 10, 64, 96, 100},
    {DType::kF32, Precision::kBF16, 10, 64, 512, 512},
    {DType::kF32, Precision::kBF16, 10, 64, 32, 32},
    {DType::kF32, Precision::kBF16, 10, 172, 64, 64},
    // k not a multiple of 32: oneDNN whatever the CPU.
    {DType::kBF16, Precision::kBF16, 20, 48, 40, 40},
};

TEST(Linear, MatchesDefinitionOnEveryPath) {
  superweight::testing::ForEachCpuClass([](Isa) {
    for (const Case& c : kCases) CheckLinear(c);
  });
  // oneDNN's f32 matmul, as SUPERWEIGHT_ONEDNN_F32=1 chooses, on the cases of up to a million
  // products (the long ones only repeat the definition's cost, under ASan most of the test's).
  internal::UseOneDnnF32(true);
  for (const Case& c : kCases) {
    if (c.m * c.k * c.n <= (int64_t{1} << 20)) CheckLinear(c);
  }
  internal::UseOneDnnF32(false);
}

// The units the packed kernel multiplies on, each at the CPU class that selects it, and none
// (oneDNN, as SUPERWEIGHT_ONEDNN_F32=1 chooses): the tests below run every one this CPU has.
enum class Unit { kTiles, kDots, kFma, kFmaAvx2, kNone };
Isa CeilingOf(Unit unit) {
  switch (unit) {
    case Unit::kTiles:
      return Isa::kAmx;
    case Unit::kDots:
      return Isa::kAvx512Bf16;
    case Unit::kFma:
      return Isa::kAvx512;
    case Unit::kFmaAvx2:
    case Unit::kNone:
      break;
  }
  return Isa::kAvx2;
}
const char* UnitName(Unit unit) {
  return unit == Unit::kTiles     ? "tiles"
         : unit == Unit::kDots    ? "dot products"
         : unit == Unit::kFma     ? "fma"
         : unit == Unit::kFmaAvx2 ? "fma avx2"
                                  : "none";
}
// Makes the matmuls take `unit`'s path (the CPU must reach its class); SelectUnit(kTiles) on any
// CPU restores the defaults.
void SelectUnit(Unit unit) {
  internal::SetIsaCeilingForTests(CeilingOf(unit));
  internal::UseOneDnnF32(unit == Unit::kNone);
}
// Whether the packed kernel serves case c at the class that selects `unit` (k a multiple of
// 32): the tiles serve bf16 precision and f32 on bf16 weights and block codes; the vector units
// everything.
bool Serves(Unit unit, const Case& c) {
  if (unit != Unit::kTiles) return unit != Unit::kNone;
  return c.precision == Precision::kBF16 || c.dtype == DType::kBF16 || HasBlockCodes(c.dtype);
}
// The log-sum-exp epilogue: the AVX2 unit has none (its callers take slices through Linear).
bool ServesLogSumExp(Unit unit, const Case& c) { return unit != Unit::kFmaAvx2 && Serves(unit, c); }
template <typename Body>
void ForEachPackedUnit(Body body) {
  for (Unit unit : {Unit::kTiles, Unit::kDots, Unit::kFma, Unit::kFmaAvx2}) {
    if (Cpu().active < CeilingOf(unit)) continue;
    SelectUnit(unit);
    SCOPED_TRACE(UnitName(unit));
    body(unit);
  }
  SelectUnit(Unit::kTiles);
}
// Inputs larger than the activation budget take several passes over the weights, each packing
// them again: with a budget of a few token blocks every case above takes several, and the
// results still match the definition.
TEST(Linear, SeveralPassesOverTheWeightsMatchTheDefinition) {
  internal::SetActivationChunkBytes(16 << 10);
  ForEachPackedUnit([](Unit) {
    for (const Case& c : kCases) CheckLinear(c);
  });
  internal::SetActivationChunkBytes(0);
}

// The packed kernel serves what it should, where the CPU has it: without this a dispatch slip
// would leave the tests above comparing oneDNN with itself.
TEST(Linear, AmxServesBf16AndExactF32) {
  if (!CpuAllows(Isa::kAmx)) GTEST_SKIP() << "no AMX-BF16 on this CPU (" << CpuDescription() << ")";
  const int64_t before = internal::PackedLinearCalls(internal::PackedUnit::kTiles);
  CheckLinear({DType::kBF16, Precision::kBF16, 40, 64, 40, 40});
  CheckLinear({DType::kQ8_0, Precision::kBF16, 40, 64, 40, 40});
  CheckLinear({DType::kBF16, Precision::kF32, 40, 64, 40, 40});
  CheckLinear({DType::kQ4_0, Precision::kBF16, 40, 64, 40, 40});
  CheckLinear({DType::kQ4_1, Precision::kBF16, 40, 64, 40, 40});
  CheckLinear({DType::kQ8_0, Precision::kF32, 40, 64, 40, 40});  // exact codes and scales
  CheckLinear({DType::kQ4_1, Precision::kF32, 40, 64, 40, 40});
  EXPECT_EQ(internal::PackedLinearCalls(internal::PackedUnit::kTiles) - before, 7);
  CheckLinear({DType::kQ6_K, Precision::kF32, 40, 256, 40, 40});  // no codes form
  CheckLinear({DType::kF32, Precision::kF32, 40, 64, 40, 40});    // f32 weights: oneDNN
  CheckLinear({DType::kBF16, Precision::kBF16, 40, 48, 40, 40});  // k off the tile width
  EXPECT_EQ(internal::PackedLinearCalls(internal::PackedUnit::kTiles) - before, 7);
}

// Off AMX, AVX512-BF16's dot product serves bf16 precision and f32 FMA (AVX-512's, below it
// AVX2's) f32 and bf16 below AVX512-BF16, on every weight type with k a multiple of 32;
// SUPERWEIGHT_ONEDNN_BF16's switch hands bf16 back to oneDNN, SUPERWEIGHT_ONEDNN_F32's the FMA
// units' work.
TEST(Linear, PackedUnitsServeOffAmx) {
  using internal::PackedUnit;
  const std::initializer_list<Case> served = {
      {DType::kBF16, Precision::kBF16, 40, 64, 40, 40},
      {DType::kQ8_0, Precision::kBF16, 40, 64, 40, 40},
      {DType::kQ4_1, Precision::kBF16, 3, 64, 40, 40},  // tokens in one group of 8
      {DType::kQ6_K, Precision::kBF16, 40, 256, 40, 40},
      {DType::kBF16, Precision::kF32, 40, 64, 40, 40},
      {DType::kQ4_1, Precision::kF32, 40, 64, 40, 40},
      {DType::kQ6_K, Precision::kF32, 40, 256, 40, 40},
      {DType::kF32, Precision::kF32, 40, 64, 40, 40},
  };
  auto calls = [] {
    return std::vector<int64_t>{internal::PackedLinearCalls(PackedUnit::kDots),
                                internal::PackedLinearCalls(PackedUnit::kFma),
                                internal::PackedLinearCalls(PackedUnit::kFmaAvx2)};
  };
  for (Isa isa : {Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2}) {
    if (Cpu().active < isa) continue;
    SCOPED_TRACE(IsaName(isa));
    internal::SetIsaCeilingForTests(isa);
    const std::vector<int64_t> before = calls();
    std::vector<int64_t> expected(3, 0);  // what each unit should serve
    for (const Case& c : served) {
      CheckLinear(c);
      ++expected[isa == Isa::kAvx2                                            ? 2
                 : isa == Isa::kAvx512Bf16 && c.precision == Precision::kBF16 ? 0
                                                                              : 1];
    }
    auto served_since = [&] {
      std::vector<int64_t> now = calls();
      for (size_t i = 0; i < now.size(); ++i) now[i] -= before[i];
      return now;
    };
    EXPECT_EQ(served_since(), expected);
    CheckLinear({DType::kBF16, Precision::kBF16, 40, 48, 40, 40});  // k off the 32-column steps
    CheckLinear({DType::kBF16, Precision::kF32, 40, 48, 40, 40});
    if (isa == Isa::kAvx512Bf16) {
      internal::UseOneDnnBf16(true);
      CheckLinear({DType::kBF16, Precision::kBF16, 40, 64, 40, 40});
      internal::UseOneDnnBf16(false);
    }
    internal::UseOneDnnF32(true);
    for (const Case& c : served) {
      if (isa != Isa::kAvx512Bf16 || c.precision != Precision::kBF16) CheckLinear(c);
    }
    internal::UseOneDnnF32(false);
    EXPECT_EQ(served_since(), expected);
  }
  internal::SetIsaCeilingForTests(Isa::kAmx);
}

// The fused entry points on each unit of the packed kernel (in one pass over the weights and in
// several) and without it: for each case, `check(case, input, unit)` gets the input (random
// normal values times `scale`) and the unit that serves it (Serves says whether it does, which
// the entry point's answer must equal).
template <typename Check>
void ForEachFusedCase(std::initializer_list<Case> cases, float scale, Check check) {
  auto run = [&](Unit unit) {
    for (const Case& c : cases) {
      SCOPED_TRACE(::testing::Message() << DTypeName(c.dtype) << " " << PrecisionName(c.precision)
                                        << " m=" << c.m << " n=" << c.n);
      std::mt19937 gen(3);
      std::normal_distribution<float> normal;
      std::vector<float> x(c.m * c.k);
      for (float& v : x) v = scale * normal(gen);
      LinearInputStorage storage;
      check(c, LinearInput(x.data(), c.m, c.k, c.precision, &storage), unit);
    }
  };
  for (int64_t chunk_bytes : {0, 16 << 10}) {  // one pass over the weights, several
    SCOPED_TRACE(chunk_bytes);
    internal::SetActivationChunkBytes(chunk_bytes);
    ForEachPackedUnit(run);
  }
  internal::SetActivationChunkBytes(0);
  SelectUnit(Unit::kNone);
  SCOPED_TRACE(UnitName(Unit::kNone));
  run(Unit::kNone);
  SelectUnit(Unit::kTiles);
}

// Outputs added into y as they leave the kernel equal y plus Linear's outputs bit for bit;
// columns past n untouched. Where the packed kernel does not serve, it declines.
TEST(LinearAddTo, EqualsYPlusLinearOutputs) {
  auto check = [](const Case& c, const LinearInput& input, Unit unit) {
    const bool served = Serves(unit, c);
    const Weights w = RandomWeights(c.dtype, c.n, c.k, 5);
    std::mt19937 gen(4);
    std::normal_distribution<float> normal;
    std::vector<float> y0(c.m * c.ldy);
    for (float& v : y0) v = normal(gen);
    std::vector<float> y = y0;
    ASSERT_EQ(LinearAddTo(w.matrix, input, y.data(), c.ldy), served);
    if (!served) {
      ASSERT_EQ(y, y0);
      return;
    }
    std::vector<float> out(c.m * c.n);
    LinearScratch scratch;
    ASSERT_TRUE(Linear(w.matrix, input, out.data(), c.n, &scratch).ok());
    for (int64_t t = 0; t < c.m; ++t) {
      for (int64_t o = 0; o < c.n; ++o) {
        ASSERT_EQ(y[t * c.ldy + o], y0[t * c.ldy + o] + out[t * c.n + o]) << t << "," << o;
      }
      for (int64_t o = c.n; o < c.ldy; ++o) ASSERT_EQ(y[t * c.ldy + o], y0[t * c.ldy + o]);
    }
  };
  ForEachFusedCase({{DType::kQ4_1, Precision::kBF16, 45, 96, 70, 75},
                    {DType::kBF16, Precision::kF32, 33, 64, 40, 40},
                    {DType::kQ4_1, Precision::kF32, 45, 96, 70, 75},
                    {DType::kBF16, Precision::kF32, 9, 64, 40, 40},
                    {DType::kBF16, Precision::kBF16, 9, 64, 64, 64},
                    {DType::kQ4_1, Precision::kBF16, 5, 96, 70, 75},
                    {DType::kQ8_0, Precision::kF32, 40, 2080, 40, 40}},  // k in several steps
                   1.f, check);
}

// Gate, up and their SwiGLU fused give SwiGluOf of the two Linear outputs (the same products,
// the same function; within an ulp or two, as the compiler contracts the vector and scalar
// copies alike or not); columns past n untouched. Where the packed kernel does not serve, it
// declines.
TEST(LinearSwiGlu, EqualsSwiGluOfTheTwoLinearOutputs) {
  constexpr float kSentinel = -12345.f;
  auto check = [&](const Case& c, const LinearInput& input, Unit unit) {
    const bool served = Serves(unit, c);
    const Weights gate = RandomWeights(c.dtype, c.n, c.k, 5);
    const Weights up = RandomWeights(c.dtype, c.n, c.k, 6);
    std::vector<float> y(c.m * c.ldy, kSentinel);
    ASSERT_EQ(LinearSwiGlu(gate.matrix, up.matrix, input, y.data(), c.ldy), served);
    if (!served) {
      for (float v : y) ASSERT_EQ(v, kSentinel);
      return;
    }
    std::vector<float> g(c.m * c.n), u(c.m * c.n);
    LinearScratch scratch;
    ASSERT_TRUE(Linear(gate.matrix, input, g.data(), c.n, &scratch).ok());
    ASSERT_TRUE(Linear(up.matrix, input, u.data(), c.n, &scratch).ok());
    for (int64_t t = 0; t < c.m; ++t) {
      for (int64_t o = 0; o < c.n; ++o) {
        const float want = SwiGluOf(g[t * c.n + o], u[t * c.n + o]);
        ASSERT_NEAR(y[t * c.ldy + o], want, 1e-6f * std::fabs(want)) << t << "," << o;
      }
      for (int64_t o = c.n; o < c.ldy; ++o) ASSERT_EQ(y[t * c.ldy + o], kSentinel);
    }
  };
  ForEachFusedCase({{DType::kQ4_1, Precision::kBF16, 45, 96, 70, 75},
                    {DType::kBF16, Precision::kF32, 33, 64, 40, 40},
                    {DType::kQ4_1, Precision::kF32, 45, 96, 70, 75},
                    {DType::kQ4_1, Precision::kF32, 7, 96, 70, 75},
                    {DType::kF32, Precision::kF32, 10, 64, 172, 172},
                    {DType::kBF16, Precision::kBF16, 100, 576, 192, 200},
                    {DType::kQ4_1, Precision::kF32, 20, 1088, 40, 40}},  // k in several steps
                   1.f, check);
}

// The lm_head's fused log-softmax: the target equals Linear's output bit for bit (the same
// products), the shift lies within 16 below their maximum, and the log-sum-exp equals theirs in
// double; targets off the outputs leave their entry alone. Where the packed kernel does not
// serve, it declines and computes nothing. Outputs spread over hundreds at the second scale: there
// the shift moves block after block.
TEST(LinearLogSumExp, EqualsLogSumExpOfLinearOutputs) {
  constexpr float kSentinel = -12345.f;
  auto check = [&](const Case& c, const LinearInput& input, Unit unit) {
    const bool served = ServesLogSumExp(unit, c);
    const Weights w = RandomWeights(c.dtype, c.n, c.k, 5);
    std::vector<int32_t> targets(c.m);
    for (int64_t t = 0; t < c.m; ++t) {
      targets[t] = static_cast<int32_t>((t * 37) % (c.n + 3)) - 1;  // -1 and n + 1 included
    }
    std::vector<float> row_shift(c.m, kSentinel), target(c.m, kSentinel);
    std::vector<double> row_sum(c.m, kSentinel);
    ASSERT_EQ(LinearLogSumExp(w.matrix, input, targets.data(), row_shift.data(), row_sum.data(),
                              target.data()),
              served);
    if (!served) {
      for (int64_t t = 0; t < c.m; ++t) ASSERT_EQ(row_shift[t], kSentinel);
      return;
    }
    std::vector<float> y(c.m * c.n);
    LinearScratch scratch;
    ASSERT_TRUE(Linear(w.matrix, input, y.data(), c.n, &scratch).ok());
    for (int64_t t = 0; t < c.m; ++t) {
      const float* row = &y[t * c.n];
      const float mx = *std::max_element(row, row + c.n);
      double sum = 0;
      for (int64_t o = 0; o < c.n; ++o) sum += std::exp(static_cast<double>(row[o]) - mx);
      ASSERT_LE(row_shift[t], mx) << t;
      ASSERT_GE(row_shift[t], mx - 16) << t;
      ASSERT_NEAR(row_shift[t] + std::log(row_sum[t]), mx + std::log(sum),
                  1e-5 + 1e-6 * std::fabs(mx))
          << t;
      const bool inside = targets[t] >= 0 && targets[t] < c.n;
      ASSERT_EQ(target[t], inside ? row[targets[t]] : kSentinel) << t;
    }
  };
  ForEachFusedCase({{DType::kQ8_0, Precision::kBF16, 45, 96, 70, 70},
                    {DType::kBF16, Precision::kF32, 33, 64, 40, 40},
                    {DType::kQ8_0, Precision::kF32, 45, 96, 70, 70},
                    {DType::kQ8_0, Precision::kF32, 6, 96, 70, 70},
                    {DType::kF32, Precision::kF32, 10, 64, 512, 512},
                    {DType::kF32, Precision::kBF16, 10, 64, 512, 512}},
                   1.f, check);
  ForEachFusedCase({{DType::kQ4_1, Precision::kBF16, 100, 576, 1000, 1000}}, 300.f, check);
}

// The fused log-sum-exp is the same bits call after call, whichever thread takes which blocks of
// the vocabulary (summed per thread, perplexities moved in the last bits from run to run).
TEST(LinearLogSumExp, SameBitsEveryCall) {
  auto check = [&](const Case& c, const LinearInput& input, Unit unit) {
    const bool served = ServesLogSumExp(unit, c);
    if (!served) return;
    const Weights w = RandomWeights(c.dtype, c.n, c.k, 5);
    std::vector<int32_t> targets(c.m);
    for (int64_t t = 0; t < c.m; ++t) targets[t] = static_cast<int32_t>((t * 37) % c.n);
    std::vector<float> first_shift(c.m), first_target(c.m);
    std::vector<double> first_sum(c.m);
    ASSERT_TRUE(LinearLogSumExp(w.matrix, input, targets.data(), first_shift.data(),
                                first_sum.data(), first_target.data()));
    for (int call = 0; call < 20; ++call) {
      std::vector<float> shift(c.m), target(c.m);
      std::vector<double> sum(c.m);
      ASSERT_TRUE(LinearLogSumExp(w.matrix, input, targets.data(), shift.data(), sum.data(),
                                  target.data()));
      ASSERT_EQ(sum, first_sum) << call;
      ASSERT_EQ(shift, first_shift) << call;
      ASSERT_EQ(target, first_target) << call;
    }
  };
  ForEachFusedCase({{DType::kQ4_1, Precision::kBF16, 64, 576, 4000, 4000}}, 3.f, check);
}

// A tile row is one cache line only if the buffer starts one: at malloc's 16-byte alignment
// three tile rows in four straddle two lines (the bf16 pass ran 1.05-1.13x faster aligned).
TEST(CacheAlignedVector, StartsACacheLineWhateverItsSize) {
  for (size_t n : {1, 3, 100, 4096, 300000}) {
    internal::CacheAlignedVector<uint16_t> v(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % internal::kCacheLine, 0u) << n;
    v.resize(3 * n + 7);  // a reallocation keeps the alignment
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % internal::kCacheLine, 0u) << n;
  }
}

// From 1 MiB up the storage is whole 2 MiB pages (under AddressSanitizer a heap block, which the
// sanitizer watches); either way it holds what a vector holds through growth and shrinking.
TEST(HugePageVector, AlignedAndAVectorWhateverItsSize) {
#if defined(SUPERWEIGHT_ASAN)
  constexpr uintptr_t kLargeAlignment = internal::kCacheLine;
#else
  constexpr uintptr_t kLargeAlignment = internal::kHugePage;
#endif
  internal::HugePageVector<float> v;
  size_t previous = 0;
  for (size_t n : {size_t{10}, size_t{200000}, size_t{300000}, size_t{1500000}, size_t{40}}) {
    v.resize(n);
    for (size_t i = previous; i < n; ++i) v[i] = static_cast<float>(i);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(v[i], static_cast<float>(i)) << n;
    const uintptr_t alignment =
        n * sizeof(float) >= internal::kHugePage / 2 ? kLargeAlignment : internal::kCacheLine;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % alignment, 0u) << n;
    v.shrink_to_fit();  // a reallocation to the exact size, large or small
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % alignment, 0u) << n;
    previous = n;
  }
}

// A freed mapping serves the next vector of its size (zeroed over the old contents); a size none
// has lets them all go; at most kKeptMappingBytes are kept, the oldest let go first;
// ReleaseKeptMappings hands them back. Under AddressSanitizer large vectors are heap blocks and
// nothing is kept.
TEST(HugePageVector, FreedMappingsServeTheNextOfTheirSizeWithinABound) {
  internal::ReleaseKeptMappings();
  const size_t n = 3 * internal::kHugePage / sizeof(float);
  [[maybe_unused]] const float* first = nullptr;  // compared below where mappings are kept
  {
    internal::HugePageVector<float> v(n, 1.f);
    first = v.data();
  }
#if defined(SUPERWEIGHT_ASAN)
  EXPECT_EQ(internal::KeptMappingBytes(), 0u);
#else
  EXPECT_EQ(internal::KeptMappingBytes(), 3 * internal::kHugePage);
  {
    internal::HugePageVector<float> same_size(n);
    EXPECT_EQ(same_size.data(), first);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(same_size[i], 0.f) << i;
    EXPECT_EQ(internal::KeptMappingBytes(), 0u);
  }
  EXPECT_EQ(internal::KeptMappingBytes(), 3 * internal::kHugePage);
  {
    internal::HugePageVector<float> other_size(n + 1);  // 4 pages: the 3-page mapping goes
    EXPECT_EQ(internal::KeptMappingBytes(), 0u);
  }
  EXPECT_EQ(internal::KeptMappingBytes(), 4 * internal::kHugePage);
  internal::ReleaseKeptMappings();
  EXPECT_EQ(internal::KeptMappingBytes(), 0u);

  // Reserved, not written: mappings of address space only.
  {
    internal::HugePageVector<float> over;
    over.reserve(internal::kKeptMappingBytes / sizeof(float) + 1);  // never kept
  }
  EXPECT_EQ(internal::KeptMappingBytes(), 0u);
  const size_t part = internal::kKeptMappingBytes / 5 * 2 / sizeof(float);  // 2/5 of the bound
  std::vector<const float*> parts;
  {
    std::vector<internal::HugePageVector<float> > vs(3);
    for (auto& v : vs) {
      v.reserve(part);
      parts.push_back(v.data());
    }
    for (auto& v : vs) internal::HugePageVector<float>().swap(v);  // the third pushes the first out
  }
  const size_t part_bytes =
      (part * sizeof(float) + internal::kHugePage - 1) / internal::kHugePage * internal::kHugePage;
  EXPECT_EQ(internal::KeptMappingBytes(), 2 * part_bytes);
  internal::HugePageVector<float> again;
  again.reserve(part);
  EXPECT_EQ(again.data(), parts[2]);  // the most recent of the size
  EXPECT_EQ(internal::KeptMappingBytes(), part_bytes);
  internal::ReleaseKeptMappings();
  EXPECT_EQ(internal::KeptMappingBytes(), 0u);
#endif
}

TEST(Linear, AmxPlanesStartACacheLine) {
  if (!CpuAllows(Isa::kAmx)) GTEST_SKIP() << "no AMX-BF16 on this CPU (" << CpuDescription() << ")";
  std::vector<float> x(37 * 64 + 5, 0.5f);
  for (Precision p : {Precision::kBF16, Precision::kF32}) {
    LinearInputStorage storage;
    const LinearInput input(x.data() + 5, 37, 64, p, &storage);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(input.AmxPlanes()) % internal::kCacheLine, 0u);
  }
}

}  // namespace
}  // namespace superweight::matmul_test
