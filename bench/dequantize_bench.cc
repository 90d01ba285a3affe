// Dequantization speed per stored type: the engine's kernels (to f32, to bf16, and to the block
// codes the AMX kernel reads in f32 precision) against the scalar loops, which follow llama.cpp's
// reference dequantize_row_* functions step for step, in the same run, taking turns.
//   superweight-bench-dequantize [--elements=393216] [--reps=30]
// Prints a line per type, nanoseconds per weight (best of reps) and the speedups, then all of it
// as one JSON line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "engine/formats/dequantize.h"
#include "nlohmann/json.hpp"

namespace {

using superweight::DType;

template <typename F>
double Nanos(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (a.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::cerr << "usage: superweight-bench-dequantize [--elements=N] [--reps=N]\n";
      return 2;
    }
    flags[a.substr(2, eq - 2)] = a.substr(eq + 1);
  }
  int64_t elements = 1536 * 256;
  int reps = 30;
  if ((flags.count("elements") && !absl::SimpleAtoi(flags["elements"], &elements)) ||
      (flags.count("reps") && !absl::SimpleAtoi(flags["reps"], &reps)) || elements % 256 != 0 ||
      elements <= 0 || reps <= 0) {
    std::cerr << "--elements must be a positive multiple of 256, --reps positive\n";
    return 2;
  }
  std::mt19937 rng(1);
  nlohmann::json all = nlohmann::json::array();
  for (DType type : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                     DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kF16, DType::kBF16}) {
    // Random bytes with the top bits of each byte clear: f16 scales stay finite and small.
    std::vector<uint8_t> src(*superweight::StorageBytes(type, elements));
    for (uint8_t& b : src) b = static_cast<uint8_t>(rng() & 0x3F);
    std::vector<float> f32(elements), scales(elements / 32), offsets(elements / 32);
    std::vector<uint16_t> bf16(elements);
    const bool codes = superweight::HasBlockCodes(type);
    double scalar = 1e300, to_f32 = 1e300, to_bf16 = 1e300, to_codes = 1e300;
    for (int r = 0; r < reps; ++r) {
      scalar = std::min(scalar, Nanos([&] {
                          superweight::internal::DequantizeRowScalar(type, src.data(), elements,
                                                                     f32.data());
                        }));
      to_f32 = std::min(to_f32, Nanos([&] {
                          superweight::DequantizeRow(type, src.data(), elements, f32.data());
                        }));
      to_bf16 =
          std::min(to_bf16, Nanos([&] {
                     superweight::DequantizeRowToBFloat16(type, src.data(), elements, bf16.data());
                   }));
      if (codes) {
        to_codes =
            std::min(to_codes, Nanos([&] {
                       superweight::DecodeRowToBlockCodes(type, src.data(), elements, bf16.data(),
                                                          scales.data(), offsets.data(), 1);
                     }));
      }
    }
    nlohmann::json line = {
        {"type", superweight::Traits(type).name}, {"scalar_ns_per_weight", scalar / elements},
        {"f32_ns_per_weight", to_f32 / elements}, {"bf16_ns_per_weight", to_bf16 / elements},
        {"f32_speedup", scalar / to_f32},         {"bf16_speedup", scalar / to_bf16}};
    if (codes) line["codes_ns_per_weight"] = to_codes / elements;
    std::printf("%-5s ns/weight: scalar loops %.3f | to f32 %.3f (%.1fx) | to bf16 %.3f (%.1fx)",
                superweight::Traits(type).name, scalar / elements, to_f32 / elements,
                scalar / to_f32, to_bf16 / elements, scalar / to_bf16);
    if (codes) std::printf(" | to block codes %.3f", to_codes / elements);
    std::printf("\n");
    all.push_back(line);
  }
  std::cout << all.dump() << std::endl;
  return 0;
}
