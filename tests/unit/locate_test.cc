#include "engine/analysis/locate.h"

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/analysis/score.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::locate_test {
namespace {

// The confirmation runs the intact text and every candidate zeroed in one batched call: each
// perplexity is bit for bit what Perplexity gives it alone (the loop it replaced), and the verdict
// follows the ratio. A threshold low enough for the small model to spike in several layers gives
// several candidates; progress ends at 1 without going back.
TEST(Locate, ConfirmationEqualsEachCandidateAlone) {
  const auto model = testing::TinyStories();
  std::ifstream f(testing::TestData("text/tinystories_validation_head.txt"));
  const std::string text((std::istreambuf_iterator<char>(f)), {});
  LocateOptions options;
  options.threshold = 0.5f;
  options.spike_ratio = 1.f;
  options.max_iterations = 4;
  options.confirm_tokens = model->tokenizer->Encode(text, model->config.add_bos);
  options.confirm_window = 64;
  options.confirm_max_windows = 3;
  options.confirm_ratio = 1.01f;
  std::vector<double> progress;
  options.on_progress = [&](double p) { progress.push_back(p); };
  for (Precision precision : {Precision::kF32, Precision::kBF16}) {
    SCOPED_TRACE(PrecisionName(precision));
    options.precision = precision;
    progress.clear();
    const std::vector<int32_t> prompt =
        model->tokenizer->Encode("Once upon a time, there was a big dog.", model->config.add_bos);
    auto located = Locate(*model, prompt, options);
    ASSERT_TRUE(located.ok()) << located.status();
    ASSERT_GE(located->candidates.size(), 2u);
    PerplexityOptions po;
    po.window = options.confirm_window;
    po.max_windows = options.confirm_max_windows;
    po.precision = precision;
    auto intact = Perplexity(*model, options.confirm_tokens, po);
    ASSERT_TRUE(intact.ok());
    EXPECT_EQ(located->perplexity_intact, intact->perplexity);
    for (const SuperWeight& c : located->candidates) {
      SCOPED_TRACE(c.layer);
      EditSet one;
      one.weights.push_back({c.layer, LinearKind::kDown, c.row, c.col, 0.f, c.expert});
      po.edits = &one;
      auto zeroed = Perplexity(*model, options.confirm_tokens, po);
      ASSERT_TRUE(zeroed.ok());
      EXPECT_EQ(c.perplexity_zeroed, zeroed->perplexity);
      EXPECT_NE(c.perplexity_zeroed, intact->perplexity);  // the edit bites
      EXPECT_EQ(c.confirmed, zeroed->perplexity >= options.confirm_ratio * intact->perplexity);
    }
    ASSERT_FALSE(progress.empty());
    EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
    EXPECT_DOUBLE_EQ(progress.back(), 1.0);
  }
}

}  // namespace
}  // namespace superweight::locate_test
