#include "engine/runtime/attention.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "engine/formats/dequantize.h"
#include "engine/runtime/amx_gemm.h"
#include "engine/runtime/cpu.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::attention_test {
namespace {

struct Case {
  int64_t heads, kv_heads, head_dim, tokens;
  float q_scale;  // large values make the softmax peaked, exercising its clamps
};

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs Random(const Case& c, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  Inputs in;
  in.q.resize(c.tokens * c.heads * c.head_dim);
  in.k.resize(c.tokens * c.kv_heads * c.head_dim);
  in.v.resize(in.k.size());
  for (float& x : in.q) x = c.q_scale * normal(gen);
  for (float& x : in.k) x = normal(gen);
  for (float& x : in.v) x = normal(gen);
  return in;
}

// The definition, in double (scale 0: 1/sqrt(head_dim); softcap and window 0: none).
std::vector<double> Reference(const Case& c, const Inputs& in, double scale = 0, double softcap = 0,
                              int64_t window = 0) {
  if (scale == 0) scale = 1 / std::sqrt(static_cast<double>(c.head_dim));
  const int64_t hd = c.head_dim, qs = c.heads * hd, ks = c.kv_heads * hd;
  const int64_t group = c.heads / c.kv_heads;
  std::vector<double> out(c.tokens * qs);
  for (int64_t h = 0; h < c.heads; ++h) {
    const int64_t kh = h / group;
    for (int64_t t = 0; t < c.tokens; ++t) {
      std::vector<double> p(t + 1);
      const int64_t first = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
      double mx = -INFINITY, sum = 0;
      for (int64_t j = first; j <= t; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d)
          dot += double{in.q[t * qs + h * hd + d]} * in.k[j * ks + kh * hd + d];
        p[j] = dot * scale;
        if (softcap > 0) p[j] = softcap * std::tanh(p[j] / softcap);
        mx = std::max(mx, p[j]);
      }
      for (int64_t j = 0; j <= t; ++j) sum += (p[j] = j < first ? 0 : std::exp(p[j] - mx));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0;
        for (int64_t j = 0; j <= t; ++j) acc += p[j] * in.v[j * ks + kh * hd + d];
        out[t * qs + h * hd + d] = acc / sum;
      }
    }
  }
  return out;
}

double MaxError(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  return worst;
}

std::vector<float> Attend(const Case& c, const Inputs& in) {
  std::vector<float> out(c.tokens * c.heads * c.head_dim, NAN);
  EXPECT_TRUE(CausalAttention({c.heads, c.kv_heads, c.head_dim}, in.q.data(), in.k.data(),
                              in.v.data(), c.tokens, out.data())
                  .ok());
  return out;
}

// Outputs are averages of v ~ N(0, 1): an absolute bound is a relative one.
constexpr double kTolerance = 2e-5;

TEST(CausalAttention, EveryKernelMatchesTheDefinition) {
  const Case cases[] = {
      {9, 3, 64, 512, 1.f},                                             // SmolLM2-135M
      {4, 4, 64, 1, 1.f},    {4, 2, 32, 5, 1.f},  {8, 2, 96, 67, 1.f},  // phi3's head_dim
      {2, 1, 128, 130, 1.f}, {6, 3, 16, 63, 1.f}, {3, 1, 48, 200, 8.f},
      {4, 2, 24, 33, 1.f},  // head_dim not a multiple of 16: the portable kernel only
      {2, 2, 64, 100, 30.f},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const Inputs in = Random(c, seed++);
    const std::vector<double> want = Reference(c, in);
    superweight::testing::ForEachCpuClass([&](Isa) {
      EXPECT_LT(MaxError(Attend(c, in), want), kTolerance)
          << c.heads << "/" << c.kv_heads << " heads, dim " << c.head_dim << ", " << c.tokens;
    });
  }
}

TEST(CausalAttention, Avx512KernelTakesEveryMultipleOf16WhereTheCpuHasIt) {
  const Case c{4, 2, 80, 20, 1.f};
  const Inputs in = Random(c, 7);
  std::vector<float> out(c.tokens * c.heads * c.head_dim);
  // The kernel does not check the CPU itself (CausalAttention does): only call it where it runs.
  if (CpuAllows(Isa::kAvx512)) {
    EXPECT_TRUE(internal::CausalAttentionAvx512({c.heads, c.kv_heads, c.head_dim}, in.q.data(),
                                                in.k.data(), in.v.data(), c.tokens, out.data(),
                                                false));
  }
  // A head size it cannot tile is refused before any AVX-512 instruction runs.
  EXPECT_FALSE(internal::CausalAttentionAvx512({4, 2, 40}, in.q.data(), in.k.data(), in.v.data(),
                                               20, out.data(), false));
}

TEST(CausalAttention, ShorterSequenceAfterALongerOneIsUnaffected) {
  // The kernel keeps its buffers between calls; leftovers of a long call must not leak.
  const Case long_case{4, 2, 64, 300, 1.f}, short_case{4, 2, 64, 37, 1.f};
  const Inputs big = Random(long_case, 11), small = Random(short_case, 12);
  const std::vector<float> fresh = Attend(short_case, small);
  Attend(long_case, big);
  EXPECT_EQ(Attend(short_case, small), fresh);
}

// The inputs rounded to bf16, as the AMX kernel rounds them.
Inputs RoundedToBf16(const Inputs& in) {
  Inputs out = in;
  for (std::vector<float>* x : {&out.q, &out.k, &out.v}) {
    for (float& f : *x) f = BFloat16ToFloat(FloatToBFloat16(f));
  }
  return out;
}

std::vector<float> AttendBf16(const Case& c, const Inputs& in) {
  std::vector<float> out(c.tokens * c.heads * c.head_dim, NAN);
  EXPECT_TRUE(CausalAttention({c.heads, c.kv_heads, c.head_dim}, in.q.data(), in.k.data(),
                              in.v.data(), c.tokens, out.data(), Precision::kBF16)
                  .ok());
  return out;
}

// bf16 precision means bf16 arithmetic on every CPU class: q, k, v and the probabilities
// rounded to bf16, the products (exact) summed in f32.
TEST(CausalAttention, Bf16MatchesTheDefinitionOnBf16InputsOnEveryPath) {
  const Case
      cases[] =
          {
              {9, 3, 64, 512, 1.f},  // SmolLM2-135M
              {4, 4, 64, 1, 1.f},    {4, 2, 32, 5, 1.f},    {8, 2, 96, 67, 1.f},
              {2, 1, 128, 130, 1.f}, {2, 2, 64, 100, 30.f}, {3, 1, 32, 33, 8.f},
              {4, 2, 24, 33, 1.f},  // head_dim not a multiple of 16: the portable kernel only
          };
  uint32_t seed = 21;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.heads << "/" << c.kv_heads << " heads, dim "
                                      << c.head_dim << ", " << c.tokens);
    const Inputs in = Random(c, seed++);
    // The products of bf16 inputs are exact and summed in f32; what remains is the rounding of
    // each probability to bf16 (8 bits), at most 2^-9 of the weighted average of |v|.
    const Inputs rounded = RoundedToBf16(in);
    float max_v = 0;
    for (float x : rounded.v) max_v = std::max(max_v, std::fabs(x));
    const std::vector<double> want = Reference(c, rounded);
    superweight::testing::ForEachCpuClass([&](Isa isa) {
      const std::vector<float> got = AttendBf16(c, in);
      EXPECT_LT(MaxError(got, want), max_v / 512 + 1e-5);
      // Rounded, not the f32 kernels' answer.
      if (c.tokens > 1) {
        EXPECT_NE(got, Attend(c, in));
      }
      if (isa != Isa::kAmx || c.head_dim % 32 != 0) return;
      // It is the AMX kernel that answered: called directly, it gives the same bits.
      std::vector<float> direct(got.size(), NAN);
      ASSERT_TRUE(internal::CausalAttentionAmx({c.heads, c.kv_heads, c.head_dim}, in.q.data(),
                                               in.k.data(), in.v.data(), c.tokens, direct.data()));
      EXPECT_EQ(got, direct);
    });
  }
}

TEST(CausalAttention, AmxKernelRefusesHeadSizesItCannotTile) {
  const Case c{4, 2, 48, 20, 1.f};
  const Inputs in = Random(c, 8);
  std::vector<float> out(c.tokens * c.heads * c.head_dim);
  // Refused before any tile instruction runs, so this holds on any CPU.
  EXPECT_FALSE(internal::CausalAttentionAmx({c.heads, c.kv_heads, c.head_dim}, in.q.data(),
                                            in.k.data(), in.v.data(), c.tokens, out.data()));
  // bf16 precision then takes the other kernels, rounding as the tiles do.
  float max_v = 0;
  for (float x : in.v) max_v = std::max(max_v, std::fabs(x));
  EXPECT_LT(MaxError(AttendBf16(c, in), Reference(c, RoundedToBf16(in))), max_v / 512 + 1e-5);
}

TEST(CausalAttention, Bf16ShorterSequenceAfterALongerOneIsUnaffected) {
  const Case long_case{4, 2, 64, 300, 1.f}, short_case{4, 2, 64, 37, 1.f};
  const Inputs big = Random(long_case, 13), small = Random(short_case, 14);
  const std::vector<float> fresh = AttendBf16(short_case, small);
  AttendBf16(long_case, big);
  EXPECT_EQ(AttendBf16(short_case, small), fresh);
}

}  // namespace
}  // namespace superweight::attention_test

namespace superweight::attention_test {
namespace {

// Gemma's attention: its own scale, tanh soft-capping of the scores (Gemma 2) and a sliding
// window, on every CPU class (the fast kernels decline soft-capping and windows that hide keys).
TEST(CausalAttention, ScaleSoftcapAndWindowMatchTheDefinition) {
  const Case c{4, 2, 32, 70, 3.f};
  const Inputs in = Random(c, 99);
  struct Variant {
    float scale, softcap;
    int64_t window;
  } variants[] = {{0.25f, 0.f, 0},   {0.f, 10.f, 0}, {0.f, 0.f, 8},
                  {0.125f, 5.f, 16}, {0.f, 0.f, 70}, {0.f, 0.f, 1}};
  for (const Variant& v : variants) {
    const std::vector<double> want = Reference(c, in, v.scale, v.softcap, v.window);
    superweight::testing::ForEachCpuClass([&](Isa) {
      std::vector<float> out(c.tokens * c.heads * c.head_dim, NAN);
      AttentionShape shape{c.heads, c.kv_heads, c.head_dim, v.scale, v.softcap, v.window};
      ASSERT_TRUE(
          CausalAttention(shape, in.q.data(), in.k.data(), in.v.data(), c.tokens, out.data()).ok());
      EXPECT_LT(MaxError(out, want), kTolerance)
          << "scale " << v.scale << ", softcap " << v.softcap << ", window " << v.window;
    });
  }
}

// Answering only the queries from first_query on (a tree's branch after its prefix): each row
// answered is the whole call's, bit for bit, on every kernel, precision and CPU class, whether
// first_query falls inside a block of queries or on its edge, and with a window or soft-capping
// (oneDNN's path).
TEST(CausalAttention, QueriesFromAFirstOneAreTheWholeCallsRows) {
  for (const AttentionShape& shape :
       {AttentionShape{4, 2, 32}, AttentionShape{4, 2, 16, 0.f, 30.f, 0},
        AttentionShape{4, 4, 64, 0.f, 0.f, 40}}) {
    const Case c{shape.heads, shape.kv_heads, shape.head_dim, 150, 3.f};
    const Inputs in = Random(c, 21);
    const int64_t width = c.heads * c.head_dim;
    testing::ForEachCpuClass([&](Isa) {
      for (Precision precision : {Precision::kF32, Precision::kBF16}) {
        SCOPED_TRACE(PrecisionName(precision));
        std::vector<float> whole(c.tokens * width);
        ASSERT_TRUE(CausalAttention(shape, in.q.data(), in.k.data(), in.v.data(), c.tokens,
                                    whole.data(), precision)
                        .ok());
        for (int64_t first : {1, 5, 33, 64, 100, 149}) {
          SCOPED_TRACE(first);
          std::vector<float> part(c.tokens * width, NAN);
          ASSERT_TRUE(CausalAttention(shape, in.q.data(), in.k.data(), in.v.data(), c.tokens,
                                      part.data(), precision, first)
                          .ok());
          EXPECT_TRUE(
              std::equal(part.begin() + first * width, part.end(), whole.begin() + first * width));
        }
      }
    });
  }
}

}  // namespace
}  // namespace superweight::attention_test
