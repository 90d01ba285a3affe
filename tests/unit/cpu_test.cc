#include "engine/runtime/cpu.h"

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "engine/runtime/matmul.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::cpu_test {
namespace {

TEST(Cpu, ParsesEveryClassNameAndRefusesOthers) {
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx}) {
    absl::StatusOr<Isa> parsed = ParseIsa(IsaName(isa));
    ASSERT_TRUE(parsed.ok()) << IsaName(isa);
    EXPECT_EQ(*parsed, isa);
  }
  for (const char* bad : {"", "AVX2", "avx", "sse4", "amx ", "avx512bf16"}) {
    absl::StatusOr<Isa> parsed = ParseIsa(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("avx512_bf16"), absl::string_view::npos);
  }
}

// SUPERWEIGHT_MAX_ISA (make test runs the suite under it) caps what the kernels may use.
TEST(Cpu, EnvironmentCapBoundsTheActiveClass) {
  const CpuInfo& cpu = Cpu();
  EXPECT_TRUE(cpu.problem.ok()) << cpu.problem;
  EXPECT_LE(static_cast<int>(cpu.active), static_cast<int>(cpu.detected));
  const char* cap = std::getenv("SUPERWEIGHT_MAX_ISA");
  if (cap != nullptr && *cap != '\0') {
    absl::StatusOr<Isa> parsed = ParseIsa(cap);
    ASSERT_TRUE(parsed.ok());
    EXPECT_LE(static_cast<int>(cpu.active), static_cast<int>(*parsed));
    EXPECT_EQ(cpu.capped, *parsed < cpu.detected);
  }
  EXPECT_TRUE(CpuAllows(Isa::kAvx2));
  EXPECT_EQ(CpuAllows(Isa::kAmx), cpu.active == Isa::kAmx);
  internal::SetIsaCeilingForTests(Isa::kAvx2);
  EXPECT_FALSE(CpuAllows(Isa::kAvx512));
  internal::SetIsaCeilingForTests(Isa::kAmx);
  EXPECT_EQ(CpuAllows(Isa::kAvx512), cpu.active >= Isa::kAvx512);
}

// A bf16 matmul on oneDNN's bf16 path: below AVX-512 oneDNN 2.6 refuses it, and that comes back
// as FAILED_PRECONDITION naming the CPU class, not as an exception; where oneDNN has bf16 it
// gives what the default path (f32 FMA on bf16 values) gives.
TEST(Cpu, OneDnnRefusalBecomesAStatus) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const int64_t m = 8, k = 64, n = 16;
  std::vector<float> x(m * k), w(n * k), y(m * n);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng);
  const Matrix matrix = Matrix::Make(DType::kF32, n, k, reinterpret_cast<const uint8_t*>(w.data()));
  internal::SetIsaCeilingForTests(Isa::kAvx512Bf16);  // not the AMX kernel
  std::vector<float> want(m * n);
  LinearScratch scratch;
  ASSERT_TRUE(Linear(matrix, x.data(), m, want.data(), n, Precision::kBF16, &scratch).ok());
  internal::UseOneDnnBf16(true);
  const absl::Status status = Linear(matrix, x.data(), m, y.data(), n, Precision::kBF16, &scratch);
  internal::UseOneDnnBf16(false);
  internal::SetIsaCeilingForTests(Isa::kAmx);
  if (Cpu().active < Isa::kAvx512) {
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_NE(status.message().find("oneDNN"), absl::string_view::npos) << status;
    EXPECT_NE(status.message().find("avx2"), absl::string_view::npos) << status;
  } else {
    ASSERT_TRUE(status.ok()) << status;
    for (int64_t i = 0; i < m * n; ++i)
      EXPECT_NEAR(y[i], want[i], 1e-4f * (1 + std::fabs(want[i])));
  }
}

}  // namespace
}  // namespace superweight::cpu_test
