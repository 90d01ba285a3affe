// The one place that decides which instruction sets the engine's kernels use. The CPU (and, for
// AMX, the kernel's grant of the tile state) is asked once; SUPERWEIGHT_MAX_ISA caps the answer
// so that one machine exercises the paths of lesser ones, and oneDNN is capped to match before
// its first primitive. Every kernel choice (matmul, attention, dequantization, conversion,
// softmax) reads CpuAllows().
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace superweight {

// The CPU classes the engine has paths for, each a superset of the one before.
enum class Isa : int {
  kAvx2 = 0,        // AVX2, FMA, F16C (x86-64-v3): Haswell .. Cascade Lake, Zen 1-3
  kAvx512 = 1,      // + AVX-512 F/BW/VL/DQ: Skylake-SP, Cascade Lake
  kAvx512Bf16 = 2,  // + AVX512-BF16: Cooper Lake, Zen 4/5
  kAmx = 3,         // + AMX-TILE and AMX-BF16, granted by the OS: Sapphire Rapids and later
};

const char* IsaName(Isa isa);
// "avx2", "avx512", "avx512_bf16" or "amx"; INVALID_ARGUMENT naming the accepted values.
absl::StatusOr<Isa> ParseIsa(std::string_view name);

struct CpuInfo {
  Isa detected = Isa::kAvx2;  // what this CPU and OS offer
  Isa active = Isa::kAvx2;    // what the kernels use: detected, capped by SUPERWEIGHT_MAX_ISA
  bool capped = false;        // SUPERWEIGHT_MAX_ISA lowered it
  // Not OK where this CPU lacks the AVX2 baseline or SUPERWEIGHT_MAX_ISA is not a class name;
  // programs refuse to start on it (the engine then runs at the detected class).
  absl::Status problem;
};

// Detected once, on first use; also caps oneDNN (before any oneDNN primitive exists, as long
// as every oneDNN user calls this first, as matmul.cc does).
const CpuInfo& Cpu();
// Whether kernels of `isa` may run: Cpu().active >= isa, lowered further by tests.
bool CpuAllows(Isa isa);
// "amx (capped from ...)" style one-liner for logs and benchmark headers.
std::string CpuDescription();

namespace internal {
// Tests lower the engine's own kernels below Cpu().active to compare paths within one process
// (oneDNN keeps its cap); SetIsaCeilingForTests(Isa::kAmx) restores it.
void SetIsaCeilingForTests(Isa ceiling);
}  // namespace internal

}  // namespace superweight
