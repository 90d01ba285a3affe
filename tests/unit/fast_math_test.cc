#include "engine/runtime/fast_math.h"

#include <cfloat>
#include <cmath>
#include <vector>

#include "engine/runtime/flush_subnormals.h"
#include "gtest/gtest.h"

namespace superweight::fast_math_test {
namespace {

TEST(FastExp, WithinTwoUlpOfExp) {
  double worst = 0;
  for (float x = -86.f; x < 88.f; x += 0.00731f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(FastExp(x) - want) / want);
  }
  EXPECT_LT(worst, 2.5e-7);
  EXPECT_EQ(FastExp(0.f), 1.f);
  EXPECT_TRUE(std::isfinite(FastExp(1000.f)));
}

TEST(FastExp, NeverSubnormal) {
  for (float x : {-86.f, -86.5f, -87.3f, -88.f, -100.f, -1000.f}) {
    const float y = FastExp(x);
    EXPECT_GE(y, FLT_MIN) << x;
    EXPECT_LT(y, 1e-37f) << x;
  }
}

TEST(MaxOf, EveryLengthAndPosition) {
  EXPECT_EQ(MaxOf(nullptr, 0), -INFINITY);
  for (int n = 1; n < 40; ++n) {
    for (int at = 0; at < n; ++at) {
      std::vector<float> x(n);
      for (int i = 0; i < n; ++i) x[i] = -static_cast<float>(i % 7) - 1.f;
      x[at] = 3.5f;
      EXPECT_EQ(MaxOf(x.data(), n), 3.5f) << n << " " << at;
    }
  }
}

float Multiply(float a, float b) {
  volatile float va = a, vb = b;  // computed at run time, under the current MXCSR
  return va * vb;
}

TEST(ScopedFlushSubnormals, FlushesInsideAndRestoresAfter) {
  const float tiny = FLT_MIN;
  EXPECT_GT(Multiply(tiny, 0.25f), 0.f);  // subnormal by default
  {
    const ScopedFlushSubnormals flush;
    EXPECT_EQ(Multiply(tiny, 0.25f), 0.f);
  }
  EXPECT_GT(Multiply(tiny, 0.25f), 0.f);
}

}  // namespace
}  // namespace superweight::fast_math_test
