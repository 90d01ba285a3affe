#include "engine/quant/activation_quant.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "engine/analysis/harness.h"
#include "engine/analysis/quantize.h"
#include "engine/runtime/forward.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::activation_quant_test {
namespace {

using testing::TinyStories;

// The definition, literally: the held elements replaced by the tensor's lower median, the step
// from max|x|, every element rounded, the held ones written back.
std::vector<float> Definition(std::vector<float> x, int bits, const std::vector<int64_t>& held) {
  std::vector<float> sorted = x;
  std::sort(sorted.begin(), sorted.end());
  const float median = sorted[(sorted.size() - 1) / 2];
  std::vector<float> kept;
  for (int64_t i : held) kept.push_back(x[i]);
  for (int64_t i : held) x[i] = median;
  float absmax = 0;
  for (float v : x) absmax = std::max(absmax, std::fabs(v));
  const float step = std::max(absmax, 1e-5f) / static_cast<float>((1 << (bits - 1)) - 1);
  for (float& v : x) v = std::nearbyint(v / step) * step;
  for (size_t i = 0; i < held.size(); ++i) x[held[i]] = kept[i];
  return x;
}

std::vector<float> RandomTensor(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

TEST(ActivationQuant, EqualsTheDefinitionBitForBit) {
  std::vector<float> scratch;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 300);
    std::vector<float> x = RandomTensor(n, trial);
    if (trial % 3 == 0) x[rng() % n] = 3000.f;  // a planted super activation
    const int bits = 2 + static_cast<int>(rng() % 7);
    // Held sets from none to every element: the median stands in only when it can matter.
    std::set<int64_t> chosen;
    const int64_t h = trial % 4 == 0 ? n : static_cast<int64_t>(rng() % std::min<int64_t>(n, 4));
    while (static_cast<int64_t>(chosen.size()) < h) chosen.insert(rng() % n);
    const std::vector<int64_t> held(chosen.begin(), chosen.end());
    const std::vector<float> want = Definition(x, bits, held);
    FakeQuantizeActivationTensor(x.data(), n, bits, held, &scratch);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(x[i], want[i]) << "trial " << trial << " n " << n << " held " << h << " at " << i;
    }
  }
}

TEST(ActivationQuant, HoldingOutTheOutlierKeepsItAndTheRestsResolution) {
  std::vector<float> x = RandomTensor(4096, 1);
  x[100] = 2000.f;
  std::vector<float> plain = x, held = x, scratch;
  FakeQuantizeActivationTensor(plain.data(), 4096, 8, {}, &scratch);
  FakeQuantizeActivationTensor(held.data(), 4096, 8, {100}, &scratch);
  EXPECT_EQ(held[100], 2000.f);
  // Plain: the step is 2000 / 127, so nearly every ordinary value rounds to zero.
  int plain_zeros = 0, held_zeros = 0;
  double plain_err = 0, held_err = 0;
  for (int i = 0; i < 4096; ++i) {
    if (i == 100) continue;
    plain_zeros += plain[i] == 0;
    held_zeros += held[i] == 0;
    plain_err += std::fabs(plain[i] - x[i]);
    held_err += std::fabs(held[i] - x[i]);
  }
  EXPECT_GT(plain_zeros, 3500);
  EXPECT_LT(held_zeros, 200);
  EXPECT_LT(held_err, plain_err / 20);
}

TEST(ActivationQuant, LevelsAndZeros) {
  std::vector<float> scratch;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int bits = 2; bits <= 8; ++bits) {
    std::vector<float> x(10000);
    for (float& v : x) v = uniform(rng);
    FakeQuantizeActivationTensor(x.data(), 10000, bits, {}, &scratch);
    const std::set<float> levels(x.begin(), x.end());
    EXPECT_LE(levels.size(), static_cast<size_t>((1 << bits) - 1)) << bits;
    EXPECT_GE(levels.size(), static_cast<size_t>((1 << bits) - 3)) << bits;
  }
  std::vector<float> zeros(64, 0.f);
  FakeQuantizeActivationTensor(zeros.data(), 64, 8, {3}, &scratch);
  for (float v : zeros) EXPECT_EQ(v, 0.f);
}

TEST(ActivationQuant, QuantizerRefusesBadBitsAndChannels) {
  const auto model = TinyStories();
  const ModelConfig& c = model->config;
  EXPECT_FALSE(ActivationQuantizer::Make(c, 1, {}).ok());
  EXPECT_FALSE(ActivationQuantizer::Make(c, 9, {}).ok());
  EXPECT_TRUE(
      ActivationQuantizer::Make(c, 8, {{0, LinearInputSite::kDown, c.intermediate - 1}}).ok());
  auto wide = ActivationQuantizer::Make(c, 8, {{0, LinearInputSite::kQkv, c.hidden}});
  ASSERT_FALSE(wide.ok());
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wide.status().message().find("qkv_input"), std::string::npos) << wide.status();
  EXPECT_FALSE(ActivationQuantizer::Make(c, 8, {{c.layers, LinearInputSite::kO, 0}}).ok());
}

// The held element of a channel is its largest magnitude over the sequence's tokens.
TEST(ActivationQuant, HoldsEachHeldChannelsLargestToken) {
  const auto model = TinyStories();
  const int64_t cols = model->config.hidden, tokens = 5;
  std::vector<float> x = RandomTensor(tokens * cols, 3);
  x[3 * cols + 7] = -500.f;  // the super activation, channel 7 at token 3
  x[1 * cols + 9] = 400.f;   // an outlier of another channel: quantized
  auto q = ActivationQuantizer::Make(model->config, 8, {{1, LinearInputSite::kGateUp, 7}});
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> want = Definition(x, 8, {3 * cols + 7});
  (*q)->Apply(1, LinearInputSite::kGateUp, tokens, cols, x.data());
  EXPECT_EQ(x, want);
  // Elsewhere nothing is held.
  std::vector<float> y = RandomTensor(tokens * cols, 4);
  y[3 * cols + 7] = -500.f;
  want = Definition(y, 8, {});
  (*q)->Apply(1, LinearInputSite::kQkv, tokens, cols, y.data());
  EXPECT_EQ(y, want);
}

class RecordingTransform : public ActivationTransform {
 public:
  void Apply(int layer, LinearInputSite site, int64_t tokens, int64_t cols,
             float* x) const override {
    calls.push_back({layer, static_cast<int>(site), tokens, cols});
    for (int64_t i = 0; i < tokens * cols; ++i) x[i] = 0;
  }
  mutable std::vector<std::vector<int64_t>> calls;
};

// The forward pass hands every layer's four linear inputs to the transform, one sequence at a
// time, before any matmul reads them (zeroed inputs: every layer adds nothing).
// Each tensor's k largest magnitudes are held out wherever they lie, at every site, with ties
// going to the first index and the held channels' elements counted once.
TEST(ActivationQuant, HoldsEachTensorsLargestMagnitudes) {
  const auto model = TinyStories();
  const int64_t cols = model->config.hidden, tokens = 6;
  auto q = ActivationQuantizer::Make(model->config, 8, {{1, LinearInputSite::kQkv, 7}}, 3);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> x = RandomTensor(tokens * cols, 5);
  x[2 * cols + 7] = 900.f;    // the held channel's largest: also the tensor's largest
  x[4 * cols + 11] = -700.f;  // two massive ones elsewhere
  x[0 * cols + 30] = 600.f;
  x[5 * cols + 2] = 600.f;  // a tie with the one before: the first index wins
  std::vector<float> want = Definition(x, 8, {2 * cols + 7, 4 * cols + 11, 0 * cols + 30});
  std::vector<float> got = x;
  (*q)->Apply(1, LinearInputSite::kQkv, tokens, cols, got.data());
  EXPECT_EQ(got, want);
  // At a site without held channels: the three largest alone.
  want = Definition(x, 8, {2 * cols + 7, 4 * cols + 11, 0 * cols + 30});
  got = x;
  (*q)->Apply(0, LinearInputSite::kGateUp, tokens, cols, got.data());
  EXPECT_EQ(got, want);
  // Refused outside 0..64.
  EXPECT_FALSE(ActivationQuantizer::Make(model->config, 8, {}, -1).ok());
  EXPECT_FALSE(
      ActivationQuantizer::Make(model->config, 8, {}, kMaxHeldLargestActivations + 1).ok());
}

TEST(ActivationQuant, ForwardAppliesTheTransformPerSequenceAtEverySite) {
  const auto model = TinyStories();
  auto view = model->ShareWeights();
  RecordingTransform recording;
  view->activation_transform = &recording;
  const std::vector<int32_t> a = {1, 200, 300}, b = {1, 50};
  SequenceInput batch[2] = {{a, nullptr}, {b, nullptr}};
  for (Precision p : {Precision::kF32, Precision::kBF16}) {
    recording.calls.clear();
    auto out = RunForward(*view, batch, ForwardOptions{p});
    ASSERT_TRUE(out.ok()) << out.status();
    const ModelConfig& c = model->config;
    ASSERT_EQ(recording.calls.size(), static_cast<size_t>(c.layers) * kNumLinearInputSites * 2);
    EXPECT_EQ(recording.calls[0], (std::vector<int64_t>{0, 0, 3, c.hidden}));
    EXPECT_EQ(recording.calls[1], (std::vector<int64_t>{0, 0, 2, c.hidden}));
    EXPECT_EQ(recording.calls[7], (std::vector<int64_t>{0, 3, 2, c.intermediate}));
    // With every linear input zero the residual stream is the embedding alone.
    auto plain = model->ShareWeights();
    std::vector<float> embedding(c.hidden);
    plain->embed.RowToFloat(200, embedding.data());
    float ss = 0;
    for (float v : embedding) ss += v * v;
    const float inv = 1.f / std::sqrt(ss / c.hidden + c.norm_eps);
    EXPECT_NEAR(out->hidden[1 * c.hidden + 5], model->final_norm[5] * embedding[5] * inv, 1e-4);
  }
}

// A tree's branches would share one quantization step per sequence: refused in the forward
// pass, and the harness runs each choice of such a model alone (the same numbers with and
// without sharing asked for).
TEST(ActivationQuant, ATreeIsRefusedAndTheHarnessRunsChoicesAlone) {
  const auto model = TinyStories();
  auto view = model->ShareWeights();
  auto quantizer = ActivationQuantizer::Make(model->config, 8, {}, 0);
  ASSERT_TRUE(quantizer.ok()) << quantizer.status();
  view->activation_transform = quantizer->get();
  const std::vector<int32_t> tokens = {1, 200, 300, 7, 8};
  const std::vector<int64_t> branches = {2, 1};
  const SequenceInput tree(tokens, nullptr, branches);
  EXPECT_EQ(RunForward(*view, {&tree, 1}, {}).status().code(), absl::StatusCode::kUnimplemented);
  const std::vector<LoglikelihoodRequest> requests = {{"Once upon a time", " there was"},
                                                      {"Once upon a time", " a dog"}};
  const std::vector<size_t> groups = {2};
  HarnessOptions options;
  const std::vector<BatchEdits> intact = {BatchEdits()};
  auto shared = ScoreLoglikelihoodsPerSetting(*view, requests, groups, options, intact);
  ASSERT_TRUE(shared.ok()) << shared.status();
  options.share_prefixes = false;
  auto alone = ScoreLoglikelihoodsPerSetting(*view, requests, groups, options, intact);
  ASSERT_TRUE(alone.ok()) << alone.status();
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ((*shared)[0][i].logprob, (*alone)[0][i].logprob);
  }
}

// The setting's view: weights as stored with activations quantized changes the logits, the
// baseline's view does not, and holding out needs super weights.
TEST(ActivationQuant, SettingViews) {
  const auto model = TinyStories();
  QuantizeSetting a8{true, {}, false};
  a8.activation_bits = 8;
  EXPECT_EQ(a8.Name(), "A8");
  QuantizeSetting held = a8;
  held.hold_out_super_activations = true;
  EXPECT_EQ(held.Name(), "A8 SA held out");
  EXPECT_FALSE(QuantizeSettingView(*model, held, {}, false).ok());
  auto view = QuantizeSettingView(*model, held, {{1, 37, 101}}, false);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_NE(view->model->activation_transform, nullptr);
  EXPECT_TRUE(view->tensors.empty());
  QuantizeSetting w8a8{false, {8, kBlockRow, ClipMethod::kNone, 0}, false};
  w8a8.activation_bits = 8;
  EXPECT_EQ(w8a8.Name(), "INT8 brow A8");
  QuantizeSetting bad = w8a8;
  bad.activation_bits = 9;
  EXPECT_FALSE(bad.Validate().ok());
  QuantizeSetting hold_without_bits{true, {}, false};
  hold_without_bits.hold_out_super_activations = true;
  EXPECT_FALSE(hold_without_bits.Validate().ok());
  QuantizeSetting largest = a8;
  largest.hold_out_largest_activations = 2;
  EXPECT_EQ(largest.Name(), "A8 top-2 held out");
  EXPECT_TRUE(largest.Validate().ok());
  auto largest_view = QuantizeSettingView(*model, largest, {}, false);  // needs no super weight
  ASSERT_TRUE(largest_view.ok()) << largest_view.status();
  EXPECT_NE(largest_view->model->activation_transform, nullptr);
  largest.hold_out_super_activations = true;
  EXPECT_EQ(largest.Name(), "A8 SA and top-2 held out");
  largest.hold_out_largest_activations = kMaxHeldLargestActivations + 1;
  EXPECT_FALSE(largest.Validate().ok());
  QuantizeSetting largest_without_bits{true, {}, false};
  largest_without_bits.hold_out_largest_activations = 1;
  EXPECT_FALSE(largest_without_bits.Validate().ok());
  const auto channels = SuperActivationChannels(model->config, {{0, 37, 101}});
  ASSERT_EQ(model->config.layers, 2);
  ASSERT_EQ(channels.size(), 3u);
  EXPECT_EQ(channels[0].layer, 0);
  EXPECT_EQ(channels[0].site, LinearInputSite::kDown);
  EXPECT_EQ(channels[0].channel, 101);
  for (int i : {1, 2}) {
    EXPECT_EQ(channels[i].layer, 1);
    EXPECT_EQ(channels[i].channel, 37);
  }
  EXPECT_EQ(channels[1].site, LinearInputSite::kQkv);
  EXPECT_EQ(channels[2].site, LinearInputSite::kGateUp);
}

}  // namespace
}  // namespace superweight::activation_quant_test
