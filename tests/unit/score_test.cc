#include "engine/analysis/score.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight {
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
}  // namespace superweight
