#include "engine/runtime/fast_math.h"

#include <cmath>

#include "gtest/gtest.h"

namespace superweight {
namespace {

TEST(FastExp, WithinTwoUlpOfExp) {
  double worst = 0;
  for (float x = -87.f; x < 88.f; x += 0.00731f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(FastExp(x) - want) / want);
  }
  EXPECT_LT(worst, 2.5e-7);
  EXPECT_EQ(FastExp(0.f), 1.f);
  EXPECT_EQ(FastExp(-1000.f) < 1e-37f, true);
  EXPECT_TRUE(std::isfinite(FastExp(1000.f)));
}

}  // namespace
}  // namespace superweight
