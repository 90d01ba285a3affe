#include "engine/quant/activation_quant.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace superweight {

void FakeQuantizeActivationTensor(float* x, int64_t n, int bits, absl::Span<const int64_t> held,
                                  std::vector<float>* scratch) {
  if (n <= 0) return;
  std::vector<float> held_values(held.size());
  for (size_t i = 0; i < held.size(); ++i) held_values[i] = x[held[i]];
  // The held elements' stand-in, the median, only matters through max|x|, and cannot raise it
  // while fewer elements are held than lie on either side of the (lower) median: then some kept
  // element is at or below it and some at or above. So the median is computed only otherwise.
  const int64_t middle = (n - 1) / 2;
  const int64_t h = static_cast<int64_t>(held.size());
  float stand_in = 0;
  if (h > 0 && h >= std::min(middle + 1, n - middle)) {
    scratch->assign(x, x + n);
    std::nth_element(scratch->begin(), scratch->begin() + middle, scratch->end());
    stand_in = (*scratch)[middle];
  }
  for (int64_t i : held) x[i] = stand_in;
  float absmax = 0;
#pragma omp parallel for reduction(max : absmax) schedule(static)
  for (int64_t i = 0; i < n; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  // SmoothQuant's step: the bound clamped away from 0 so that an all-zero tensor stays zero.
  const float step = std::max(absmax, 1e-5f) / static_cast<float>((1 << (bits - 1)) - 1);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] = std::nearbyint(x[i] / step) * step;
  for (size_t i = 0; i < held.size(); ++i) x[held[i]] = held_values[i];
}

namespace {

int64_t SiteWidth(const ModelConfig& c, LinearInputSite site) {
  switch (site) {
    case LinearInputSite::kQkv:
    case LinearInputSite::kGateUp:
      return c.hidden;
    case LinearInputSite::kO:
      return int64_t{c.heads} * c.head_dim;
    case LinearInputSite::kDown:
      return c.intermediate;
  }
  return 0;
}

// The k largest |x[i]| (the first index on ties) appended to `held` where not in it already: one
// pass, keeping the k best so far sorted (k is small).
void AddLargest(const float* x, int64_t n, int k, std::vector<int64_t>* held) {
  std::vector<int64_t> best;  // by |x| descending, then index ascending
  best.reserve(k + 1);
  auto before = [x](int64_t a, int64_t b) {
    const float fa = std::fabs(x[a]), fb = std::fabs(x[b]);
    return fa > fb || (fa == fb && a < b);
  };
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int>(best.size()) == k && !before(i, best.back())) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), i, before), i);
    if (static_cast<int>(best.size()) > k) best.pop_back();
  }
  for (int64_t i : best) {
    if (std::find(held->begin(), held->end(), i) == held->end()) held->push_back(i);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ActivationQuantizer>> ActivationQuantizer::Make(
    const ModelConfig& config, int bits, std::vector<HeldActivationChannel> held,
    int held_largest) {
  if (bits < 2 || bits > 8) {
    return absl::InvalidArgumentError(absl::StrFormat("activation bits %d outside 2..8", bits));
  }
  if (held_largest < 0 || held_largest > kMaxHeldLargestActivations) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d largest activations held out: outside 0..%d", held_largest,
                        kMaxHeldLargestActivations));
  }
  std::unique_ptr<ActivationQuantizer> q(new ActivationQuantizer());
  q->bits_ = bits;
  q->held_largest_ = held_largest;
  q->held_channels_.resize(static_cast<size_t>(config.layers) * kNumLinearInputSites);
  for (const HeldActivationChannel& h : held) {
    if (h.layer < 0 || h.layer >= config.layers || h.channel < 0 ||
        h.channel >= SiteWidth(config, h.site)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "held activation layers[%d].%s[%d] outside the model (%d layers, %d channels)", h.layer,
          LinearInputSiteName(h.site), h.channel, config.layers, SiteWidth(config, h.site)));
    }
    std::vector<int64_t>& channels =
        q->held_channels_[static_cast<size_t>(h.layer) * kNumLinearInputSites +
                          static_cast<int>(h.site)];
    if (std::find(channels.begin(), channels.end(), h.channel) == channels.end()) {
      channels.push_back(h.channel);
    }
  }
  return q;
}

void ActivationQuantizer::Apply(int layer, LinearInputSite site, int64_t tokens, int64_t cols,
                                float* x) const {
  const std::vector<int64_t>& channels =
      held_channels_[static_cast<size_t>(layer) * kNumLinearInputSites + static_cast<int>(site)];
  // The super activation: each held channel's largest magnitude (its first token on ties).
  std::vector<int64_t> held;
  for (int64_t c : channels) {
    int64_t best = c;
    for (int64_t t = 1; t < tokens; ++t) {
      if (std::fabs(x[t * cols + c]) > std::fabs(x[best])) best = t * cols + c;
    }
    held.push_back(best);
  }
  if (held_largest_ > 0) AddLargest(x, tokens * cols, held_largest_, &held);
  thread_local std::vector<float> scratch;
  FakeQuantizeActivationTensor(x, tokens * cols, bits_, held, &scratch);
}

}  // namespace superweight
