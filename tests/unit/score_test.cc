#include "engine/analysis/score.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::score_test {
namespace {

// Sequences of different lengths scored in one batch (one forward pass, one lm_head pass over
// all rows) give what each gives alone, per-sequence edits included.
TEST(TokenLogprobs, BatchEqualsEachSequenceAlone) {
  auto model = OpenModel(testing::TestData("stories260K/stories260K.bin"));
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int32_t> a = {1, 403, 407, 261, 378, 289, 425, 267, 311, 283};
  const std::vector<int32_t> b = {1, 20, 30};
  const std::vector<int32_t> c = {1, 500, 7, 8, 9, 10, 11};
  EditSet zero;
  zero.weights.push_back({2, LinearKind::kDown, 5, 7, 0.f});
  const std::vector<SequenceInput> batch = {{a, nullptr}, {b, &zero}, {c, nullptr}};
  for (Precision precision : {Precision::kF32, Precision::kBF16}) {
    auto together = TokenLogprobs(**model, batch, precision);
    ASSERT_TRUE(together.ok()) << together.status();
    ASSERT_EQ(together->size(), 3u);
    for (size_t s = 0; s < batch.size(); ++s) {
      auto alone = TokenLogprobs(**model, {&batch[s], 1}, precision);
      ASSERT_TRUE(alone.ok()) << alone.status();
      ASSERT_EQ((*together)[s].size(), batch[s].tokens.size() - 1);
      for (size_t i = 0; i < (*alone)[0].size(); ++i) {
        EXPECT_NEAR((*together)[s][i], (*alone)[0][i], 1e-4) << s << " " << i;
        EXPECT_LT((*together)[s][i], 0.f);
      }
    }
  }
}

}  // namespace
}  // namespace superweight::score_test

namespace superweight::score_test {
namespace {

// Settings that edit the lower layers alike share them: the second of two that prune the same
// layer-0 weights (one also a layer-1 weight) starts at layer 1 from the first's stream; a
// setting that parts from every other at its first edit starts from the intact pass. Each output
// is the setting's pass alone, bit for bit, at both precisions and every CPU class.
TEST(SettingPasses, SettingsThatEditTheLowerLayersAlikeShareThem) {
  const auto model = testing::TinyStories();
  ASSERT_EQ(model->config.layers, 2);
  const std::vector<int32_t> a = {1, 300, 12, 77, 5, 9}, b = {2, 40, 41};
  const std::vector<SequenceInput> batch = {{a}, {b}};
  EditSet lower, lower_and_upper, upper;
  lower.weights = {{0, LinearKind::kQ, 3, 4, 0.f}, {1, LinearKind::kUp, 5, 6, 0.f}};
  lower_and_upper = lower;
  lower_and_upper.weights.push_back({1, LinearKind::kDown, 7, 8, 2.f});
  upper.weights = {{1, LinearKind::kDown, 7, 8, 2.f}};
  const std::vector<std::vector<EditSet>> settings = {
      {EditSet{}, EditSet{}}, {lower, lower}, {upper, upper}, {lower_and_upper, lower_and_upper}};
  testing::ForEachCpuClass([&](Isa) {
    for (Precision precision : {Precision::kF32, Precision::kBF16}) {
      SCOPED_TRACE(PrecisionName(precision));
      ForwardOptions o;
      o.precision = precision;
      IntactPass intact(*model, batch, o);
      SettingPasses passes(*model, batch, settings, &intact, o);
      ASSERT_EQ(passes.order(), (std::vector<size_t>{1, 3, 2, 0}));
      EXPECT_EQ(passes.StartLayer(0), 0);
      EXPECT_EQ(passes.StartLayer(1), 1);  // from setting 1's stream
      EXPECT_EQ(passes.StartLayer(2), 1);  // from the intact pass
      EXPECT_EQ(passes.StartLayer(3), 2);
      for (size_t k = 0; k < settings.size(); ++k) {
        const size_t s = passes.order()[k];
        SCOPED_TRACE(s);
        auto shared = passes.Run(k);
        ASSERT_TRUE(shared.ok()) << shared.status();
        std::vector<SequenceInput> edited = batch;
        for (size_t i = 0; i < edited.size(); ++i) edited[i].edits = &settings[s][i];
        auto alone = RunForward(*model, edited, o);
        ASSERT_TRUE(alone.ok());
        EXPECT_EQ(shared->hidden, alone->hidden);
      }
    }
  });
}

}  // namespace
}  // namespace superweight::score_test
