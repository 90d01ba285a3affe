#include "engine/formats/quantize_ggml.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/formats/row_kernels.h"

// Every expression below is llama.cpp's, one rounding per operation: this file is built with
// -ffp-contract=off (engine/CMakeLists.txt) so that x * id + 8.5f is not fused into one FMA,
// which would round once and move a few values across a truncation boundary.

namespace superweight {
namespace {

inline uint32_t BitsOf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

inline void Store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// C's (int8_t)(v) as llama.cpp's x86 builds compute it: truncation to int32 (cvttss2si, whose
// answer for NaN and out-of-range values is INT32_MIN), then the low byte. Finite inputs reach
// the out-of-range case only through a subnormal scale whose reciprocal overflows; C leaves that
// undefined, and this keeps it defined.
inline int8_t TruncToInt8(float v) {
  const int32_t truncated =
      (v > -2147483648.f && v < 2147483648.f) ? static_cast<int32_t>(v) : INT32_MIN;
  return static_cast<int8_t>(truncated);  // modular (GCC and clang define it; C++20 does too)
}

// The value of the largest magnitude, with its sign; the first one on ties (strict <), and +0
// when every value is zero (so such a block's scale is 0 / -8 = -0).
inline float SignedAbsMax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

inline void MinMax(const float* x, int n, float* min, float* max) {
  *min = FLT_MAX;
  *max = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    if (x[j] < *min) *min = x[j];
    if (x[j] > *max) *max = x[j];
  }
}

// llama.cpp's nearest_int: adding 1.5 * 2^23 leaves round-half-even(v) in the low mantissa bits
// (exact for |v| < 2^22). Outside that range, infinities and NaN give what its bit trick gives
// (0 for both), which the callers then clamp, as llama.cpp does.
inline int NearestInt(float v) {
  const float shifted = v + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007FFFFF) - 0x00400000;
}

inline int Clamp(int v, int lo, int hi) { return std::max(lo, std::min(hi, v)); }

// llama.cpp's make_qkx2_quants, for the n (16 or 32) values of one K-quant sub-block: codes in
// [0, nmax] and a (scale, min <= 0) pair with x ~ scale * code + min, chosen among nstep + 1
// grids of (nmax + rmin + rdelta * step) steps over [min, max] by the least squares fit of scale
// and min to each grid's codes, kept where it lowers the error weighted by `weights` (squared, or
// absolute with `absolute_error`, as Q2_K asks). The first grid that lowers the error also moves
// `min`, which the later grids start from (llama.cpp's order). Returns the scale; *negated_min
// is -min.
float FitScaleAndMin(const float* x, const float* weights, int n, int nmax, float rmin,
                     float rdelta, int nstep, bool absolute_error, uint8_t* codes,
                     float* negated_min) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::memset(codes, 0, n);
    *negated_min = -min;
    return 0.f;
  }
  auto error_of = [absolute_error](float diff) {
    return absolute_error ? std::fabs(diff) : diff * diff;
  };
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * codes[i] + min - x[i];
    best_error += weights[i] * error_of(diff);
  }
  uint8_t trial[32];
  for (int step = 0; step <= nstep; ++step) {
    iscale = (rmin + rdelta * step + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
      trial[i] = static_cast<uint8_t>(l);
      const float wl = weights[i] * l;
      sum_l += wl;
      sum_l2 += wl * l;
      sum_xl += wl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float trial_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float trial_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (trial_min > 0) {  // the offset may only lower the values: refit the scale alone
      trial_min = 0;
      trial_scale = sum_xl / sum_l2;
    }
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = trial_scale * trial[i] + trial_min - x[i];
      error += weights[i] * error_of(diff);
    }
    if (error < best_error) {
      std::memcpy(codes, trial, n);
      best_error = error;
      scale = trial_scale;
      min = trial_min;
    }
  }
  *negated_min = -min;
  return scale;
}

// Q4_K and Q5_K share everything but the code width: per 256-value super-block, eight 32-value
// sub-blocks each get FitScaleAndMin's scale and min (weights: the sub-block's RMS plus |x|),
// those are quantized to 6 bits against the largest of each (d, dmin in f16), and the codes are
// recomputed against the stored scales, as quantize_row_q4_K_ref / q5_K_ref do. Writes d, dmin
// and the 12 packed scale bytes at y; the codes (0..nmax) go to codes[256].
void QuantizeKSuperBlock(const float* x, int nmax, float rmin, int nstep, uint8_t* y,
                         uint8_t* codes) {
  float scales[8], mins[8], weights[32];
  float max_scale = 0, max_min = 0;  // both >= 0: the min is subtracted
  for (int j = 0; j < 8; ++j) {
    const float* sub = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += sub[l] * sub[l];
    const float rms = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = rms + std::fabs(sub[l]);
    scales[j] = FitScaleAndMin(sub, weights, 32, nmax, rmin, 0.1f, nstep, /*absolute_error=*/false,
                               codes + 32 * j, &mins[j]);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t* packed = y + 4;  // the layout KQuantScaleMin reads
  for (int j = 0; j < 8; ++j) {
    // uint8_t first, then the cap: a negative scale wraps to a large byte and caps at 63, as in C.
    const uint8_t ls =
        std::min<uint8_t>(63, static_cast<uint8_t>(NearestInt(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, static_cast<uint8_t>(NearestInt(inv_min * mins[j])));
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  const uint16_t d = GgmlFloatToHalf(max_scale / 63.f);
  const uint16_t dmin = GgmlFloatToHalf(max_min / 63.f);
  Store16(y, d);
  Store16(y + 2, dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    internal::KQuantScaleMin(j, packed, &sc, &m);
    const float step = HalfToFloat(d) * sc;
    if (step == 0) continue;  // keeps FitScaleAndMin's codes, as llama.cpp does
    const float offset = HalfToFloat(dmin) * m;
    for (int l = 0; l < 32; ++l) {
      codes[32 * j + l] =
          static_cast<uint8_t>(Clamp(NearestInt((x[32 * j + l] + offset) / step), 0, nmax));
    }
  }
}

// Below this largest magnitude a group counts as zero (llama.cpp's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// llama.cpp's make_qx_quants for Q6_K (16 values, codes -32..31, weights x^2): the codes of
// 19 symmetric grids, -(32 + 0.1 * step) / max for step -9..9 around the largest magnitude's
// value, the one with the best weighted least-squares fit kept. Writes codes + 32; returns the
// fitted scale (0, codes 0, for an all-but-zero group).
float SymmetricScaleSearch(const float* x, uint8_t* codes) {
  constexpr int kN = 16, kNmax = 32;
  const float max = SignedAbsMax(x, kN);
  if (std::fabs(max) < kGroupMaxEps) {
    std::memset(codes, 0, kN);
    return 0.f;
  }
  // The weighted sums of one grid; sum_l2 == 0 when every code is 0.
  auto fit = [x](float iscale, float* sum_lx, float* sum_l2) {
    *sum_lx = 0;
    *sum_l2 = 0;
    for (int i = 0; i < kN; ++i) {
      const int l = Clamp(NearestInt(iscale * x[i]), -kNmax, kNmax - 1);
      const float w = x[i] * x[i];
      *sum_lx += w * x[i] * l;
      *sum_l2 += w * l * l;
    }
  };
  auto write_codes = [x, codes](float iscale) {
    for (int i = 0; i < kN; ++i) {
      codes[i] = static_cast<uint8_t>(Clamp(NearestInt(iscale * x[i]), -kNmax, kNmax - 1) + kNmax);
    }
  };
  float iscale = -kNmax / max;
  float sum_lx, sum_l2;
  fit(iscale, &sum_lx, &sum_l2);
  write_codes(iscale);
  float scale = sum_l2 != 0 ? sum_lx / sum_l2 : 0.0f;
  float best = scale * sum_lx;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    iscale = -(kNmax + 0.1f * step) / max;
    fit(iscale, &sum_lx, &sum_l2);
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      write_codes(iscale);
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

// llama.cpp's make_q3_quants with its error search (Q3_K: 16 values, nmax 4): codes against
// -nmax / (the largest magnitude's value), then up to five passes that move single codes where
// the least-squares scale's fit improves (weights x^2). Writes codes + nmax (0..2 * nmax - 1);
// returns the fitted scale (0, codes 0, for an all-but-zero group).
float SymmetricCodesRefined(const float* x, int nmax, uint8_t* codes) {
  constexpr int kN = 16;
  const float max = SignedAbsMax(x, kN);
  if (std::fabs(max) < kGroupMaxEps) {
    std::memset(codes, 0, kN);
    return 0.f;
  }
  const float iscale = -nmax / max;
  int l_of[kN];
  float sum_lx = 0, sum_l2 = 0;
  for (int i = 0; i < kN; ++i) {
    const int l = Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
    l_of[i] = l;
    const float w = x[i] * x[i];
    sum_lx += w * x[i] * l;
    sum_l2 += w * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < kN; ++i) {
      const float w = x[i] * x[i];
      float slx = sum_lx - w * x[i] * l_of[i];
      if (!(slx > 0)) continue;
      float sl2 = sum_l2 - w * l_of[i] * l_of[i];
      const int l = Clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
      if (l == l_of[i]) continue;
      slx += w * x[i] * l;
      sl2 += w * l * l;
      if (sl2 > 0 && slx * slx * sum_l2 > sum_lx * sum_lx * sl2) {
        l_of[i] = l;
        sum_lx = slx;
        sum_l2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < kN; ++i) codes[i] = static_cast<uint8_t>(l_of[i] + nmax);
  return sum_l2 > 0.0f ? sum_lx / sum_l2 : 0.0f;
}

// Q2_K's and Q3_K's codes layout: per 128 values, 32 bytes holding four 32-value runs, run r in
// bits 2r..2r+1.
void PackTwoBitCodes(const uint8_t* codes, uint8_t* q) {
  for (int j = 0; j < 256; j += 128, q += 32) {
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<uint8_t>(codes[j + l] | (codes[j + l + 32] << 2) |
                                  (codes[j + l + 64] << 4) | (codes[j + l + 96] << 6));
    }
  }
}

}  // namespace

namespace internal {

void F32FromFloat(const float* x, int64_t n, uint8_t* out) {
  if (n > 0) std::memcpy(out, x, static_cast<size_t>(n) * 4);
}

void F16FromFloat(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) Store16(out + 2 * i, GgmlFloatToHalf(x[i]));
}

void BF16FromFloat(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) Store16(out + 2 * i, GgmlFloatToBFloat16(x[i]));
}

// Q4_0: d = max / -8 (the extreme value lands on code 0), codes x / d + 8 truncated after + 0.5.
void Q4_0FromFloat(const float* x, int64_t n, uint8_t* y) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 18) {
    const float d = SignedAbsMax(x, 32) / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    Store16(y, GgmlFloatToHalf(d));
    for (int j = 0; j < 16; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[16 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min<int>(15, TruncToInt8(x0 + 8.5f)));
      const uint8_t xi1 = static_cast<uint8_t>(std::min<int>(15, TruncToInt8(x1 + 8.5f)));
      y[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void Q4_1FromFloat(const float* x, int64_t n, uint8_t* y) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 20) {
    float min, max;
    MinMax(x, 32, &min, &max);
    const float d = (max - min) / 15;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    Store16(y, GgmlFloatToHalf(d));
    Store16(y + 2, GgmlFloatToHalf(min));
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[16 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min<int>(15, TruncToInt8(x0 + 0.5f)));
      const uint8_t xi1 = static_cast<uint8_t>(std::min<int>(15, TruncToInt8(x1 + 0.5f)));
      y[4 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

// Q5_0/Q5_1: 5-bit codes, the low four bits packed as Q4's, the fifth bits of the 32 elements in
// one little-endian uint32 (element j's at bit j).
void Q5_0FromFloat(const float* x, int64_t n, uint8_t* y) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 22) {
    const float d = SignedAbsMax(x, 32) / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    Store16(y, GgmlFloatToHalf(d));
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[16 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min<int>(31, TruncToInt8(x0 + 16.5f)));
      const uint8_t xi1 = static_cast<uint8_t>(std::min<int>(31, TruncToInt8(x1 + 16.5f)));
      y[6 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(y + 2, &qh, 4);
  }
}

void Q5_1FromFloat(const float* x, int64_t n, uint8_t* y) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 24) {
    float min, max;
    MinMax(x, 32, &min, &max);
    const float d = (max - min) / 31;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    Store16(y, GgmlFloatToHalf(d));
    Store16(y + 2, GgmlFloatToHalf(min));
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[16 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min<int>(31, TruncToInt8(x0 + 0.5f)));
      const uint8_t xi1 = static_cast<uint8_t>(std::min<int>(31, TruncToInt8(x1 + 0.5f)));
      y[8 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(y + 4, &qh, 4);
  }
}

// Q8_0: d = amax / 127, codes roundf (half away from zero) of x / d.
void Q8_0FromFloat(const float* x, int64_t n, uint8_t* y) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 34) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    Store16(y, GgmlFloatToHalf(d));
    for (int j = 0; j < 32; ++j) {
      y[2 + j] = static_cast<uint8_t>(TruncToInt8(std::round(x[j] * id)));
    }
  }
}

// Q4_K: 144-byte super-blocks of 256: d, dmin, 12 scale bytes, then per 64 values 32 bytes
// holding the first 32 codes in the low nibbles and the next 32 in the high ones.
void Q4_KFromFloat(const float* x, int64_t n, uint8_t* y) {
  uint8_t codes[256];
  for (int64_t i = 0; i < n / 256; ++i, x += 256, y += 144) {
    QuantizeKSuperBlock(x, 15, -1.f, 20, y, codes);
    uint8_t* q = y + 16;
    for (int j = 0; j < 256; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l)
        q[l] = static_cast<uint8_t>(codes[j + l] | (codes[j + l + 32] << 4));
    }
  }
}

// Q5_K: 176-byte super-blocks: d, dmin, 12 scale bytes, 32 bytes of fifth bits (element l of
// each 32-value sub-block j at bit j of byte l), then the low four bits packed as Q4_K's.
void Q5_KFromFloat(const float* x, int64_t n, uint8_t* y) {
  uint8_t codes[256];
  for (int64_t i = 0; i < n / 256; ++i, x += 256, y += 176) {
    QuantizeKSuperBlock(x, 31, -0.5f, 15, y, codes);
    uint8_t* high_bits = y + 16;
    uint8_t* q = y + 48;
    std::memset(high_bits, 0, 32);
    for (int j = 0; j < 256; j += 64, q += 32) {
      const int sub_block = j / 32;
      for (int l = 0; l < 32; ++l) {
        const uint8_t low = codes[j + l], high = codes[j + l + 32];
        high_bits[l] |=
            static_cast<uint8_t>(((low >> 4) << sub_block) | ((high >> 4) << (sub_block + 1)));
        q[l] = static_cast<uint8_t>((low & 0xF) | ((high & 0xF) << 4));
      }
    }
  }
}

// Q6_K: 210-byte super-blocks of sixteen 16-value sub-blocks with signed 8-bit scales against
// one f16 d: 128 bytes of low nibbles, 64 of high bit pairs, 16 scales, d. Each sub-block's
// scale is SymmetricScaleSearch's, quantized against the one of largest magnitude (-128), and
// the codes (-32..31, stored + 32) recomputed against the stored scale.
void Q6_KFromFloat(const float* x, int64_t n, uint8_t* y) {
  for (int64_t i = 0; i < n / 256; ++i, x += 256, y += 210) {
    uint8_t codes[256];
    float scales[16];
    for (int ib = 0; ib < 16; ++ib) {
      scales[ib] = SymmetricScaleSearch(x + 16 * ib, codes + 16 * ib);
    }
    const float max_scale = SignedAbsMax(scales, 16);
    if (std::fabs(max_scale) < kGroupMaxEps) {  // an all-but-zero super-block: every byte 0
      std::memset(y, 0, 210);
      continue;
    }
    const float iscale = -128.f / max_scale;
    const uint16_t d = GgmlFloatToHalf(1 / iscale);
    int8_t* stored_scales = reinterpret_cast<int8_t*>(y + 192);
    for (int ib = 0; ib < 16; ++ib) {
      stored_scales[ib] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[ib])));
    }
    Store16(y + 208, d);
    for (int ib = 0; ib < 16; ++ib) {
      const float step = HalfToFloat(d) * stored_scales[ib];
      if (step == 0) continue;  // keeps the search's codes, as llama.cpp does
      for (int l = 0; l < 16; ++l) {
        codes[16 * ib + l] =
            static_cast<uint8_t>(Clamp(NearestInt(x[16 * ib + l] / step), -32, 31) + 32);
      }
    }
    uint8_t* low = y;
    uint8_t* high = y + 128;
    for (int j = 0; j < 256; j += 128, low += 64, high += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t c0 = codes[j + l], c1 = codes[j + l + 32], c2 = codes[j + l + 64],
                      c3 = codes[j + l + 96];
        low[l] = static_cast<uint8_t>((c0 & 0xF) | ((c2 & 0xF) << 4));
        low[l + 32] = static_cast<uint8_t>((c1 & 0xF) | ((c3 & 0xF) << 4));
        high[l] = static_cast<uint8_t>((c0 >> 4) | ((c1 >> 4) << 2) | ((c2 >> 4) << 4) |
                                       ((c3 >> 4) << 6));
      }
    }
  }
}

// Q2_K: 84-byte super-blocks of sixteen 16-value sub-blocks, each with FitScaleAndMin's scale and
// min (codes 0..3, weights |x|, absolute error), both quantized to 4 bits against the largest of
// each (d, dmin in f16) and packed in one byte per sub-block; the codes are then recomputed
// against the stored pair, as quantize_row_q2_K_ref does.
void Q2_KFromFloat(const float* x, int64_t n, uint8_t* y) {
  constexpr float kScaleSteps = 15.f;
  for (int64_t i = 0; i < n / 256; ++i, x += 256, y += 84) {
    uint8_t codes[256];
    float scales[16], mins[16], weights[16];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = FitScaleAndMin(x + 16 * j, weights, 16, 3, -0.5f, 0.1f, 15,
                                 /*absolute_error=*/true, codes + 16 * j, &mins[j]);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    uint8_t* packed = y;
    // int, then the byte: C's conversions, should a fitted scale or min come out negative.
    if (max_scale > 0) {
      const float iscale = kScaleSteps / max_scale;
      for (int j = 0; j < 16; ++j) packed[j] = static_cast<uint8_t>(NearestInt(iscale * scales[j]));
      Store16(y + 80, GgmlFloatToHalf(max_scale / kScaleSteps));
    } else {
      std::memset(packed, 0, 16);
      Store16(y + 80, GgmlFloatToHalf(0.f));
    }
    if (max_min > 0) {
      const float iscale = kScaleSteps / max_min;
      for (int j = 0; j < 16; ++j) {
        packed[j] = static_cast<uint8_t>(packed[j] | (NearestInt(iscale * mins[j]) << 4));
      }
      Store16(y + 82, GgmlFloatToHalf(max_min / kScaleSteps));
    } else {
      Store16(y + 82, GgmlFloatToHalf(0.f));
    }
    const float d = HalfToFloat(static_cast<uint16_t>(y[80] | (y[81] << 8)));
    const float dmin = HalfToFloat(static_cast<uint16_t>(y[82] | (y[83] << 8)));
    for (int j = 0; j < 16; ++j) {
      const float step = d * (packed[j] & 0xF);
      if (step == 0) continue;  // keeps the fit's codes, as llama.cpp does
      const float offset = dmin * (packed[j] >> 4);
      for (int l = 0; l < 16; ++l) {
        codes[16 * j + l] =
            static_cast<uint8_t>(Clamp(NearestInt((x[16 * j + l] + offset) / step), 0, 3));
      }
    }
    PackTwoBitCodes(codes, y + 16);
  }
}

// Q3_K: 110-byte super-blocks of sixteen 16-value sub-blocks with SymmetricCodesRefined's
// scales quantized to 6 bits (stored + 32) against the one of largest magnitude (-32), codes
// -4..3 recomputed against the stored scales, stored + 4 as a high bit (32 bytes) and two low
// bits (64 bytes, laid out as Q2_K's), as quantize_row_q3_K_ref does.
void Q3_KFromFloat(const float* x, int64_t n, uint8_t* y) {
  for (int64_t i = 0; i < n / 256; ++i, x += 256, y += 110) {
    uint8_t codes[256];
    float scales[16];
    for (int j = 0; j < 16; ++j) {
      scales[j] = SymmetricCodesRefined(x + 16 * j, 4, codes + 16 * j);
    }
    const float max_scale = SignedAbsMax(scales, 16);
    uint8_t* hmask = y;
    uint8_t* packed = y + 96;
    std::memset(packed, 0, 12);
    if (max_scale != 0) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        // int8_t first, as C's `int8_t l = nearest_int(...)`, then the clamp.
        int l = static_cast<int8_t>(NearestInt(iscale * scales[j]));
        l = Clamp(l, -32, 31) + 32;
        if (j < 8) {
          packed[j] = static_cast<uint8_t>(l & 0xF);
        } else {
          packed[j - 8] = static_cast<uint8_t>(packed[j - 8] | ((l & 0xF) << 4));
        }
        packed[j % 4 + 8] = static_cast<uint8_t>(packed[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
      }
      Store16(y + 108, GgmlFloatToHalf(1 / iscale));
    } else {
      Store16(y + 108, GgmlFloatToHalf(0.f));
    }
    const float d = HalfToFloat(static_cast<uint16_t>(y[108] | (y[109] << 8)));
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
      const int sc = (low | (((packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
      const float step = d * sc;
      if (step == 0) continue;  // keeps the search's codes, as llama.cpp does
      for (int l = 0; l < 16; ++l) {
        codes[16 * j + l] =
            static_cast<uint8_t>(Clamp(NearestInt(x[16 * j + l] / step), -4, 3) + 4);
      }
    }
    std::memset(hmask, 0, 32);
    for (int j = 0; j < 256; ++j) {
      if (codes[j] > 3) {
        hmask[j % 32] = static_cast<uint8_t>(hmask[j % 32] | (1 << (j / 32)));
        codes[j] = static_cast<uint8_t>(codes[j] - 4);
      }
    }
    PackTwoBitCodes(codes, y + 32);
  }
}

}  // namespace internal

uint16_t GgmlFloatToHalf(float f) {
  const uint32_t bits = BitsOf(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) {  // NaN: quiet, the top 9 payload bits kept
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  }
  // 65520 = 0x477FF000 is halfway between the largest half (65504) and 65536; the tie goes to
  // the even neighbour, infinity.
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (abs >= 0x38800000u) {  // a normal half (>= 2^-14): rebias the exponent, round 13 bits off
    uint32_t h = (abs - 0x38000000u) >> 13;
    const uint32_t rest = abs & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry may make the next power
    return static_cast<uint16_t>(sign | h);
  }
  // Subnormal half: the value in units of 2^-24, rounded to nearest even. Up to 2^-25 (a tie
  // with zero, which is even) everything rounds to zero.
  if (abs <= 0x33000000u) return sign;
  const uint32_t mantissa = (abs & 0x7FFFFFu) | 0x800000u;
  const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24 in this range
  uint32_t h = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;  // 0x400 is the smallest normal: correct
  return static_cast<uint16_t>(sign | h);
}

uint16_t GgmlFloatToBFloat16(float f) {
  const uint32_t bits = BitsOf(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 64u);
  return static_cast<uint16_t>((bits + (0x7FFFu + ((bits >> 16) & 1u))) >> 16);
}

bool HasGgmlQuantizer(DType type) { return Traits(type).from_float_ref != nullptr; }

DType FallbackTypeForRows(DType requested, int64_t row_length) {
  if (row_length % Traits(requested).block_elements == 0) return requested;
  DType fallback;
  switch (requested) {
    case DType::kQ2_K:
    case DType::kQ3_K:
      fallback = DType::kQ4_0;
      break;
    case DType::kQ4_K:
      fallback = DType::kQ5_0;
      break;
    case DType::kQ5_K:
      fallback = DType::kQ5_1;
      break;
    case DType::kQ6_K:
      fallback = DType::kQ8_0;
      break;
    default:
      return requested;
  }
  return row_length % Traits(fallback).block_elements == 0 ? fallback : DType::kF16;
}

absl::Status QuantizeRow(DType type, const float* x, int64_t n, uint8_t* out) {
  const DTypeTraits& traits = Traits(type);
  if (!HasGgmlQuantizer(type)) {
    return absl::UnimplementedError(absl::StrFormat("no quantizer for %s", traits.name));
  }
  if (n < 0 || n % traits.block_elements != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d values are not a whole number of %d-element %s blocks", n,
                        traits.block_elements, traits.name));
  }
  // Refused up front so that nothing is written: llama.cpp would store a NaN scale (or, for
  // F16/BF16, the value itself), which no reader can use.
  for (int64_t i = 0; i < n; ++i) {
    if ((BitsOf(x[i]) & 0x7F800000u) == 0x7F800000u) {
      return absl::InvalidArgumentError(
          absl::StrFormat("element %d is %s: only finite values can be quantized to %s", i,
                          std::isnan(x[i]) ? "NaN" : "infinite", traits.name));
    }
  }
  traits.from_float_ref(x, n, out);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> QuantizeTensor(DType type, const float* x, int64_t rows,
                                                    int64_t cols) {
  if (rows < 0 || cols < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("negative shape [%d, %d]", rows, cols));
  }
  const DTypeTraits& traits = Traits(type);
  if (!HasGgmlQuantizer(type)) {
    return absl::UnimplementedError(absl::StrFormat("no quantizer for %s", traits.name));
  }
  auto row_bytes = StorageBytes(type, static_cast<uint64_t>(cols));
  if (!row_bytes.ok()) return row_bytes.status();
  if (rows > 0 && *row_bytes > (uint64_t{1} << 50) / static_cast<uint64_t>(rows)) {
    return absl::InvalidArgumentError(absl::StrFormat("[%d, %d] overflows", rows, cols));
  }
  std::vector<uint8_t> out(*row_bytes * static_cast<uint64_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    absl::Status s = QuantizeRow(type, x + r * cols, cols, out.data() + r * *row_bytes);
    if (!s.ok()) return absl::Status(s.code(), absl::StrFormat("row %d: %s", r, s.message()));
  }
  return out;
}

}  // namespace superweight
