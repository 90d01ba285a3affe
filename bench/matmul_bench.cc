// oneDNN alone on given matmul shapes, with its preferred (prepacked) weight layout: the
// ceiling the engine's linear layers are compared against. oneDNN is capped at the engine's CPU
// class (SUPERWEIGHT_MAX_ISA). --bf16 measures oneDNN's bf16 matmul from AVX512-BF16 up, where
// the engine's bf16 runs on bf16 dot products (AMX tiles, or VDPBF16PS); below it, where the
// engine does bf16 arithmetic on f32 FMA units (oneDNN 2.6 has no bf16 matmul there), oneDNN's
// f32 matmul, which is that ceiling there.
//   superweight-bench-matmul --m=512 --shapes=KxN,KxN,... [--bf16] [--plain] [--reps=5]
#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_flags.h"
#include "engine/runtime/cpu.h"
#include "nlohmann/json.hpp"
#include "oneapi/dnnl/dnnl.hpp"

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags = superweight::bench::ParseFlags(argc, argv, 1);
  int64_t m = 512;
  int reps = 5;
  absl::SimpleAtoi(flags["m"], &m);
  if (flags.count("reps")) absl::SimpleAtoi(flags["reps"], &reps);
  superweight::Cpu();  // caps oneDNN at the engine's class before its first primitive
  const bool bf16 =
      flags.count("bf16") > 0 && superweight::CpuAllows(superweight::Isa::kAvx512Bf16);
  using dnnl::memory;
  const auto type = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  double flops = 0, seconds = 0;
  for (absl::string_view shape : absl::StrSplit(flags["shapes"], ',', absl::SkipEmpty())) {
    std::vector<std::string> kn = absl::StrSplit(shape, 'x');
    int64_t k = 0, n = 0;
    if (kn.size() != 2 || !absl::SimpleAtoi(kn[0], &k) || !absl::SimpleAtoi(kn[1], &n)) {
      std::cerr << "bad shape " << shape << "\n";
      return 2;
    }
    memory::desc a({m, k}, type, memory::format_tag::ab);
    // --plain: weights as the engine reads them in place ([n, k] rows, i.e. "ba"); otherwise
    // oneDNN's preferred (prepacked) layout.
    memory::desc b_any = flags.count("plain") ? memory::desc({k, n}, type, memory::format_tag::ba)
                                              : memory::desc({k, n}, type, memory::format_tag::any);
    memory::desc c({m, n}, memory::data_type::f32, memory::format_tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b_any, c), eng);
    dnnl::matmul prim(pd);
    memory am(a, eng), bm(pd.weights_desc(), eng), cm(c, eng);
    // Ordinary values (not zeros, not denormals), written through a plain f32 source and
    // reordered into each memory's layout and type.
    for (memory* mem : {&am, &bm}) {
      const memory::dims dims = mem == &am ? memory::dims{m, k} : memory::dims{k, n};
      memory::desc plain(dims, memory::data_type::f32, memory::format_tag::ab);
      memory src(plain, eng);
      auto* p = static_cast<float*>(src.get_data_handle());
      for (int64_t i = 0; i < dims[0] * dims[1]; ++i) p[i] = 0.01f * static_cast<float>(i % 13 - 6);
      dnnl::reorder(src, *mem).execute(stream, src, *mem);
    }
    prim.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    stream.wait();
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) {
      prim.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    }
    stream.wait();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    flops += 2.0 * m * k * n * reps;
  }
  std::cout << nlohmann::json({{"gflops", flops / seconds / 1e9},
                               {"type", bf16 ? "bf16" : "f32"},
                               {"cpu_class", superweight::IsaName(superweight::Cpu().active)}})
                   .dump()
            << std::endl;
  return 0;
}
