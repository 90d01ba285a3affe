#include "engine/runtime/edit_set.h"

#include <cmath>

#include "engine/analysis/layer_max_tap.h"
#include "engine/runtime/forward.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight {
namespace {

// Keeps one layer's down_proj input and output.
class CaptureTap : public ForwardTap {
 public:
  explicit CaptureTap(int layer) : layer_(layer) {}
  void OnDownProj(int layer, int sequence, const float* input, const float* output, int tokens,
                  int intermediate, int hidden) override {
    if (layer != layer_) return;
    in.assign(input, input + tokens * intermediate);
    out.assign(output, output + tokens * hidden);
  }
  std::vector<float> in, out;

 private:
  int layer_;
};

class EditSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = OpenModel(testing::TestData("stories260K/stories260K.bin"));
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  CaptureTap Run(const EditSet* edits, int layer, Precision precision = Precision::kF32) {
    CaptureTap tap(layer);
    SequenceInput in{tokens_, edits};
    ForwardOptions o;
    o.tap = &tap;
    o.precision = precision;
    auto out = RunForward(*model_, {&in, 1}, o);
    EXPECT_TRUE(out.ok()) << out.status();
    return tap;
  }
  std::unique_ptr<Model> model_;
  std::vector<int32_t> tokens_ = {1, 403, 407, 261, 378, 432};
};

TEST_F(EditSetTest, ZeroingOneWeightChangesExactlyItsOutputChannel) {
  const int layer = 1, row = 7, col = 33;
  const float w = model_->layers[layer].Get(LinearKind::kDown).At(row, col);
  ASSERT_NE(w, 0.f);
  EditSet edits;
  edits.weights.push_back({layer, LinearKind::kDown, row, col, 0.f});
  CaptureTap base = Run(nullptr, layer);
  CaptureTap edited = Run(&edits, layer);
  const int D = model_->config.hidden, I = model_->config.intermediate;
  // Inputs of the edited layer are untouched; its output moves by -w * x[t, col] in `row` only.
  EXPECT_EQ(base.in, edited.in);
  for (size_t t = 0; t < tokens_.size(); ++t) {
    for (int r = 0; r < D; ++r) {
      const float want = base.out[t * D + r] - (r == row ? w * base.in[t * I + col] : 0.f);
      EXPECT_NEAR(edited.out[t * D + r], want, 1e-5f) << t << "," << r;
    }
  }
  // And the mapped weights were not written.
  EXPECT_EQ(model_->layers[layer].Get(LinearKind::kDown).At(row, col), w);
}

TEST_F(EditSetTest, IdentityEditChangesNothingAndLaterLayersFeelARealOne) {
  const int layer = 0, row = 3, col = 5;
  const float w = model_->layers[layer].Get(LinearKind::kDown).At(row, col);
  EditSet same;
  same.weights.push_back({layer, LinearKind::kDown, row, col, w});
  EXPECT_EQ(Run(nullptr, 4).out, Run(&same, 4).out);
  EditSet big;
  big.weights.push_back({layer, LinearKind::kDown, row, col, 100.f});
  EXPECT_NE(Run(nullptr, 4).out, Run(&big, 4).out);
}

// In bf16 on AMX, gate, up and their SwiGLU run fused unless an edit touches gate or up: an
// identity edit (the unfused path) gives the fused result bit for bit, and a real edit moves
// the down_proj input in the edited weight's channel only.
TEST_F(EditSetTest, GateAndUpEditsReachTheirChannelWhetherOrNotTheMlpIsFused) {
  const int layer = 2, row = 9, col = 17;
  const int I = model_->config.intermediate;
  const CaptureTap base = Run(nullptr, layer, Precision::kBF16);
  for (LinearKind kind : {LinearKind::kGate, LinearKind::kUp}) {
    const float w = model_->layers[layer].Get(kind).At(row, col);
    ASSERT_NE(w, 0.f);
    EditSet same, zero;
    same.weights.push_back({layer, kind, row, col, w});
    zero.weights.push_back({layer, kind, row, col, 0.f});
    EXPECT_EQ(Run(&same, layer, Precision::kBF16).in, base.in);
    const CaptureTap edited = Run(&zero, layer, Precision::kBF16);
    int moved = 0;
    for (size_t t = 0; t < tokens_.size(); ++t) {
      for (int c = 0; c < I; ++c) {
        if (c != row) {
          ASSERT_EQ(edited.in[t * I + c], base.in[t * I + c]) << t << "," << c;
        } else {
          moved += edited.in[t * I + c] != base.in[t * I + c];
        }
      }
    }
    EXPECT_GT(moved, 0);
  }
}

// In bf16 on AMX the attention and MLP outputs are added into the residual stream as they leave
// the tiles, unless an edit or a tap needs them on their own: identity edits on o_proj and
// down_proj (which turn the fusion off) give the fused pass's hidden states bit for bit. On
// TinyStories-656K, whose down_proj rows (384) fit the tiles, unlike stories260K's (172).
TEST_F(EditSetTest, ResidualFusionGivesWhatTheSeparateAdditionGives) {
  auto model = OpenModel(testing::TestData("hf_tinystories_656k"));
  ASSERT_TRUE(model.ok()) << model.status();
  const int layer = 1;
  EditSet same;
  for (LinearKind kind : {LinearKind::kO, LinearKind::kDown}) {
    same.weights.push_back({layer, kind, 2, 3, (*model)->layers[layer].Get(kind).At(2, 3)});
  }
  ForwardOptions o;
  o.precision = Precision::kBF16;
  SequenceInput fused{tokens_, nullptr}, separate{tokens_, &same};
  auto a = RunForward(**model, {&fused, 1}, o);
  auto b = RunForward(**model, {&separate, 1}, o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->hidden, b->hidden);
}

TEST_F(EditSetTest, ActivationOverrideIsWhatTheTapSees) {
  EditSet edits;
  edits.activations.push_back({2, 0, 10, 123.5f});
  CaptureTap tap = Run(&edits, 2);
  EXPECT_EQ(tap.out[10], 123.5f);
  LayerMaxTap max_tap(1, model_->config.layers);
  SequenceInput in{tokens_, &edits};
  ForwardOptions o;
  o.tap = &max_tap;
  ASSERT_TRUE(RunForward(*model_, {&in, 1}, o).ok());
  EXPECT_EQ(max_tap.layers(0)[2].output_max_abs, 123.5f);
  EXPECT_EQ(max_tap.layers(0)[2].output_token, 0);
  EXPECT_EQ(max_tap.layers(0)[2].output_channel, 10);
}

TEST_F(EditSetTest, OutOfRangeEditsAreRefused) {
  EditSet e1;
  e1.weights.push_back({5, LinearKind::kDown, 0, 0, 0.f});
  EXPECT_EQ(e1.Validate(*model_).code(), absl::StatusCode::kInvalidArgument);
  EditSet e2;
  e2.weights.push_back({0, LinearKind::kDown, 64, 0, 0.f});
  EXPECT_FALSE(e2.Validate(*model_).ok());
  EditSet e3;
  e3.activations.push_back({0, 6, 0, 1.f});  // token 6 of a 6-token sequence
  SequenceInput in{tokens_, &e3};
  EXPECT_FALSE(RunForward(*model_, {&in, 1}, {}).ok());
}

}  // namespace
}  // namespace superweight
