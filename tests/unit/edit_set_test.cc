#include "engine/runtime/edit_set.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "engine/analysis/layer_max_tap.h"
#include "engine/runtime/forward.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::edit_set_test {
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

// Where two edit sets part: the lowest layer whose edits differ as sets, whatever their order.
TEST(EditSetLayers, TheFirstLayerTwoEditSetsDifferAt) {
  EditSet outliers;
  outliers.weights = {{0, LinearKind::kQ, 1, 2, 0.f}, {3, LinearKind::kUp, 4, 5, 0.f}};
  EditSet both = outliers;
  both.weights.insert(both.weights.begin(), {2, LinearKind::kDown, 7, 8, 0.f});
  EXPECT_EQ(outliers.FirstLayerDifferentFrom(both, 9), 2);
  EXPECT_EQ(both.FirstLayerDifferentFrom(outliers, 9), 2);
  EditSet reordered = both;
  std::reverse(reordered.weights.begin(), reordered.weights.end());
  EXPECT_EQ(both.FirstLayerDifferentFrom(reordered, 9), 9);
  EditSet other_value = both;
  other_value.weights[2].value = 1.f;  // layer 3's
  EXPECT_EQ(both.FirstLayerDifferentFrom(other_value, 9), 3);
  EditSet activation = both;
  activation.activations.push_back({1, 0, 3, 2.f});
  EXPECT_EQ(both.FirstLayerDifferentFrom(activation, 9), 1);
  EditSet pruned = both;
  pruned.pruned_experts.push_back({0, 1});
  EXPECT_EQ(pruned.FirstLayerDifferentFrom(both, 9), 0);
  // `none` is what same sets give, not a bound: every kind differing above it gives their lowest.
  EditSet all_kinds = both, later = both;
  later.weights.push_back({5, LinearKind::kQ, 1, 1, 0.f});
  later.activations.push_back({6, 0, 1, 1.f});
  later.pruned_experts.push_back({7, 0});
  EXPECT_EQ(all_kinds.FirstLayerDifferentFrom(later, 1), 5);
}

// A pass with edits from a middle layer on, continued from the intact pass before that layer,
// is the whole edited pass bit for bit, at both precisions and every CPU class this machine
// covers (on AMX the intact prefix takes the fused residual paths that the edited layers leave).
// The intact pass moves only forward; a layer it has passed is recomputed from the embeddings;
// watching a layer sees what a tap on the whole pass sees there.
TEST_F(EditSetTest, AnEditedPassTakesOverTheIntactPassBeforeItsFirstEditedLayer) {
  auto tinystories = OpenModel(testing::TestData("hf_tinystories_656k"));
  ASSERT_TRUE(tinystories.ok()) << tinystories.status();
  const std::vector<int32_t> shorter = {1, 300, 12, 77};
  for (const Model* model : {model_.get(), tinystories->get()}) {
    const int layers = model->config.layers, middle = layers / 2;
    ASSERT_GT(middle, 0);
    const Matrix& down = model->layers[middle].Get(LinearKind::kDown);
    EditSet first, second;
    first.weights.push_back({middle, LinearKind::kDown, 5, 9, 3 * down.At(5, 9)});
    first.weights.push_back({layers - 1, LinearKind::kO, 2, 3, 0.f});
    first.activations.push_back({middle, 1, 10, -40.f});
    second.weights.push_back({layers - 1, LinearKind::kGate, 4, 1, 0.f});
    const std::vector<SequenceInput> plain = {{tokens_, nullptr}, {shorter, nullptr}};
    const std::vector<SequenceInput> edited = {{tokens_, &first}, {shorter, &second}};
    EXPECT_EQ(FirstEditedLayer(*model, edited), middle);
    EXPECT_EQ(FirstEditedLayer(*model, plain), layers);
    testing::ForEachCpuClass([&](Isa) {
      for (Precision precision : {Precision::kF32, Precision::kBF16}) {
        SCOPED_TRACE(PrecisionName(precision));
        ForwardOptions o;
        o.precision = precision;
        auto whole_edited = RunForward(*model, edited, o);
        auto whole_intact = RunForward(*model, plain, o);
        ASSERT_TRUE(whole_edited.ok() && whole_intact.ok());
        ASSERT_NE(whole_edited->hidden, whole_intact->hidden);
        IntactPass intact(*model, edited, o);  // the edits ignored
        auto taken_over = intact.RunEdited(edited);
        ASSERT_TRUE(taken_over.ok()) << taken_over.status();
        EXPECT_EQ(taken_over->hidden, whole_edited->hidden);
        EXPECT_EQ(taken_over->offsets, whole_edited->offsets);
        auto intact_end = intact.Before(layers);
        ASSERT_TRUE(intact_end.ok());
        EXPECT_EQ(FinishForward(*model, *intact_end)->hidden, whole_intact->hidden);
        // Past layer 1 now: before it again, from the embeddings, and on to the end alike.
        auto again = intact.Before(1);
        ASSERT_TRUE(again.ok());
        EXPECT_EQ(again->layer, 1);
        ASSERT_TRUE(RunLayers(*model, plain, layers, o, &*again).ok());
        EXPECT_EQ(FinishForward(*model, *again)->hidden, whole_intact->hidden);
        // Watching a layer on the intact pass (not yet there) sees what a tap on the whole
        // intact pass sees there.
        CaptureTap watched(middle), whole(middle);
        ForwardOptions tapped = o;
        tapped.tap = &whole;
        ASSERT_TRUE(RunForward(*model, {&plain[1], 1}, tapped).ok());
        IntactPass fresh(*model, {&plain[1], 1}, o);
        ASSERT_TRUE(fresh.Watch(middle, &watched).ok());
        EXPECT_EQ(watched.in, whole.in);
        EXPECT_EQ(watched.out, whole.out);
        ASSERT_FALSE(watched.out.empty());
      }
    });
    // Streams and batches that do not belong together, and a stream not at its end, are refused.
    auto stream = EmbedBatch(*model, plain);
    ASSERT_TRUE(stream.ok());
    EXPECT_EQ(RunLayers(*model, {&plain[0], 1}, 1, {}, &*stream).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(RunLayers(*model, plain, layers + 1, {}, &*stream).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(FinishForward(*model, *stream).status().code(),
              absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(RunLayers(*model, plain, 1, {}, &*stream).ok());
    EXPECT_EQ(RunLayers(*model, plain, 0, {}, &*stream).code(), absl::StatusCode::kInvalidArgument);
    std::atomic<bool> cancelled{true};
    ForwardOptions cancelling;
    cancelling.cancelled = &cancelled;
    EXPECT_EQ(RunLayers(*model, plain, layers, cancelling, &*stream).code(),
              absl::StatusCode::kCancelled);
    EXPECT_EQ(stream->layer, 1);  // nothing ran
  }
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

TEST_F(EditSetTest, CoordinatesGivenTwiceAndNonFiniteValuesAreRefused) {
  // Each edit is a correction added to the pass: zeroing a weight twice would score -w.
  EditSet twice;
  twice.weights.push_back({1, LinearKind::kDown, 3, 5, 0.f});
  twice.weights.push_back({0, LinearKind::kDown, 3, 5, 0.f});
  twice.weights.push_back({1, LinearKind::kDown, 3, 5, 2.f});
  absl::Status s = twice.Validate(*model_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("down_proj[3, 5] of layer 1 is given more than once"),
            std::string::npos)
      << s;
  SequenceInput in{tokens_, &twice};
  EXPECT_EQ(RunForward(*model_, {&in, 1}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EditSet other_kinds;  // the same (row, col) of different tensors or layers is no duplicate
  other_kinds.weights.push_back({1, LinearKind::kDown, 3, 5, 0.f});
  other_kinds.weights.push_back({1, LinearKind::kUp, 3, 5, 0.f});
  other_kinds.weights.push_back({0, LinearKind::kDown, 3, 5, 0.f});
  EXPECT_TRUE(other_kinds.Validate(*model_).ok());
  EditSet activations;
  activations.activations.push_back({0, 1, 2, 1.f});
  activations.activations.push_back({0, 1, 2, 1.f});
  EXPECT_NE(activations.Validate(*model_).message().find("given more than once"),
            std::string::npos);
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    EditSet weight;
    weight.weights.push_back({0, LinearKind::kDown, 0, 0, bad});
    EXPECT_NE(weight.Validate(*model_).message().find("not finite"), std::string::npos);
    EditSet activation;
    activation.activations.push_back({0, 0, 0, bad});
    EXPECT_NE(activation.Validate(*model_).message().find("not finite"), std::string::npos);
  }
}

}  // namespace
}  // namespace superweight::edit_set_test
