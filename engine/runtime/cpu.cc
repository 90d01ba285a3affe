#include "engine/runtime/cpu.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "oneapi/dnnl/dnnl.h"

namespace superweight {
namespace {

constexpr const char* kCapVariable = "SUPERWEIGHT_MAX_ISA";

// AMX-TILE and AMX-BF16 in CPUID, and the tile state in XCR0 (the OS saves it). Read here, not
// with __builtin_cpu_supports: clang before 16 knows no "amx-tile", and the fuzzers build with
// clang 14.
bool CpuHasAmxBf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;
  if ((edx & kAmxBf16) == 0 || (edx & kAmxTile) == 0) return false;
  uint32_t xcr0_low = 0, xcr0_high = 0;  // OSXSAVE is implied by the AVX2 checked before
  __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  constexpr uint32_t kTileConfigAndData = (1u << 17) | (1u << 18);
  return (xcr0_low & kTileConfigAndData) == kTileConfigAndData;
}

Isa DetectIsa(absl::Status* problem) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    *problem = absl::FailedPreconditionError(
        "this CPU lacks AVX2/FMA, the engine's baseline (x86-64-v3: Haswell, Zen 1 or later)");
    return Isa::kAvx2;
  }
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq")) {
    return Isa::kAvx2;
  }
  if (!__builtin_cpu_supports("avx512bf16")) return Isa::kAvx512;
  if (!CpuHasAmxBf16()) return Isa::kAvx512Bf16;
  // Linux hands out the tile data state only to processes that ask (ARCH_REQ_XCOMP_PERM for
  // XTILEDATA); a kernel without AMX support refuses, and the CPU counts as AVX512-BF16.
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return Isa::kAvx512Bf16;
  return Isa::kAmx;
}

dnnl_cpu_isa_t OneDnnIsa(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return dnnl_cpu_isa_avx2;
    case Isa::kAvx512:
      return dnnl_cpu_isa_avx512_core;
    case Isa::kAvx512Bf16:
      return dnnl_cpu_isa_avx512_core_bf16;
    case Isa::kAmx:
      break;
  }
  return dnnl_cpu_isa_avx512_core_amx;
}

CpuInfo Detect() {
  CpuInfo info;
  info.detected = DetectIsa(&info.problem);
  info.active = info.detected;
  if (const char* cap = std::getenv(kCapVariable); cap != nullptr && *cap != '\0') {
    absl::StatusOr<Isa> parsed = ParseIsa(cap);
    if (!parsed.ok()) {
      if (info.problem.ok()) {
        info.problem =
            absl::InvalidArgumentError(absl::StrCat(kCapVariable, ": ", parsed.status().message()));
      }
    } else if (*parsed < info.active) {
      info.active = *parsed;
      info.capped = true;
    }
  }
  // oneDNN takes a cap only before it has generated code; a later call is refused, which
  // leaves oneDNN at its own choice (never above the CPU). Nothing here is fatal.
  if (info.capped) dnnl_set_max_cpu_isa(OneDnnIsa(info.active));
  return info;
}

std::atomic<int> ceiling_for_tests{static_cast<int>(Isa::kAmx)};

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Bf16:
      return "avx512_bf16";
    case Isa::kAmx:
      break;
  }
  return "amx";
}

absl::StatusOr<Isa> ParseIsa(std::string_view name) {
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx}) {
    if (name == IsaName(isa)) return isa;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown CPU class '", absl::string_view(name.data(), std::min<size_t>(name.size(), 64)),
      "'; expected one of avx2, avx512, avx512_bf16, amx"));
}

const CpuInfo& Cpu() {
  static const CpuInfo info = Detect();
  return info;
}

bool CpuAllows(Isa isa) {
  return static_cast<int>(isa) <= static_cast<int>(Cpu().active) &&
         static_cast<int>(isa) <= ceiling_for_tests.load(std::memory_order_relaxed);
}

std::string CpuDescription() {
  const CpuInfo& cpu = Cpu();
  if (!cpu.capped) return IsaName(cpu.active);
  return absl::StrCat(IsaName(cpu.active), " (", kCapVariable, "; the CPU has ",
                      IsaName(cpu.detected), ")");
}

void internal::SetIsaCeilingForTests(Isa ceiling) {
  ceiling_for_tests.store(static_cast<int>(ceiling), std::memory_order_relaxed);
}

}  // namespace superweight
