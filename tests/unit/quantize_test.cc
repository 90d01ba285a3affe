#include "engine/analysis/quantize.h"

#include <cmath>
#include <fstream>
#include <memory>
#include <vector>

#include "engine/analysis/check.h"
#include "engine/runtime/forward.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::quantize_test {
namespace {

using testing::TinyStories;

std::vector<float> Logits(const Model& model, const std::vector<int32_t>& tokens,
                          Precision precision) {
  SequenceInput input{tokens, nullptr};
  ForwardOptions fo;
  fo.precision = precision;
  auto out = RunForward(model, {&input, 1}, fo);
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<float> logits(tokens.size() * model.config.vocab);
  EXPECT_TRUE(ComputeLogits(model, out->hidden.data(), static_cast<int64_t>(tokens.size()),
                            logits.data(), precision)
                  .ok());
  return logits;
}

// The transform applied where the matmuls convert weights gives the logits of a model whose
// weights hold the fake-quantized values outright, on every CPU class's path, f32 and bf16.
TEST(Quantize, TransformedWeightsAreTheMaterializedFakeQuantizedWeights) {
  const auto model = TinyStories();
  const RtnSpec spec{3, 256, ClipMethod::kZScore, 4};
  auto q = FakeQuantizeModel(*model, spec, {{1, 37, 101}}, /*quantize_lm_head=*/false);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->tensors.size(), model->layers.size() * kNumLinearKinds);
  EXPECT_GT(q->weight_mse, 0);
  // The same values, stored: every linear weight materialized as f32.
  std::unique_ptr<Model> stored = model->ShareWeights();
  std::vector<std::vector<float>> storage;
  for (size_t l = 0; l < model->layers.size(); ++l) {
    for (int k = 0; k < kNumLinearKinds; ++k) {
      const Matrix& w = q->model->layers[l].Get(static_cast<LinearKind>(k));
      storage.emplace_back(w.rows * w.cols);
      for (int64_t r = 0; r < w.rows; ++r) w.RowToFloat(r, &storage.back()[r * w.cols]);
      stored->layers[l].Get(static_cast<LinearKind>(k)) = Matrix::Make(
          DType::kF32, w.rows, w.cols, reinterpret_cast<const uint8_t*>(storage.back().data()));
    }
  }
  EXPECT_EQ(q->model->layers[1].Get(LinearKind::kDown).At(37, 101),
            model->layers[1].Get(LinearKind::kDown).At(37, 101));  // kept
  const std::vector<int32_t> tokens = model->tokenizer->Encode("Once upon a time, a cat", true);
  const std::vector<float> intact = Logits(*model, tokens, Precision::kF32);
  testing::ForEachCpuClass([&](Isa) {
    for (Precision p : {Precision::kF32, Precision::kBF16}) {
      const std::vector<float> a = Logits(*q->model, tokens, p);
      const std::vector<float> b = Logits(*stored, tokens, p);
      double max_diff = 0, moved = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        max_diff = std::max<double>(max_diff, std::fabs(a[i] - b[i]));
        moved = std::max<double>(moved, std::fabs(a[i] - intact[i]));
      }
      EXPECT_LT(max_diff, p == Precision::kF32 ? 1e-4 : 2e-2) << PrecisionName(p);
      EXPECT_GT(moved, 1e-2) << "quantization changed nothing";
    }
  });
}

TEST(Quantize, TableRowsInOrderWithTheirErrors) {
  const auto model = TinyStories();
  QuantizeOptions o;
  o.super_weights = {{1, 37, 101}};
  o.settings = {{true, {}, false},
                {false, {8, kBlockRow, ClipMethod::kNone, 0}, false},
                {false, {2, kBlockTensor, ClipMethod::kNone, 0}, false},
                {false, {2, kBlockTensor, ClipMethod::kNone, 0}, true}};
  std::ifstream f(testing::TestData("text/tinystories_validation_head.txt"));
  std::string text((std::istreambuf_iterator<char>(f)), {});
  o.plan.wikitext2 = model->tokenizer->Encode(text, model->config.add_bos);
  o.plan.window = 128;
  o.plan.max_windows = 2;
  double last = -1;
  o.on_progress = [&](double p, const std::string&) {
    EXPECT_GE(p, last);
    last = p;
  };
  auto rows = Quantize(*model, o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[0].setting.Name(), "FP");
  EXPECT_EQ((*rows)[1].setting.Name(), "INT8 brow");
  EXPECT_EQ((*rows)[3].setting.Name(), "INT2 btensor +SW");
  const double fp = (*rows)[0].evaluation.wikitext2_perplexity;
  EXPECT_EQ((*rows)[0].weight_mse, 0);
  EXPECT_NEAR((*rows)[1].evaluation.wikitext2_perplexity, fp, fp * 0.02);  // INT8 per row
  EXPECT_GT((*rows)[2].evaluation.wikitext2_perplexity, fp * 1.5);         // INT2 tensor-wide
  EXPECT_GT((*rows)[2].weight_mse, (*rows)[1].weight_mse * 100);
  EXPECT_GT((*rows)[2].super_weight_relative_error[0], 0);
  EXPECT_EQ((*rows)[3].super_weight_relative_error[0], 0);  // restored
  EXPECT_DOUBLE_EQ(last, 1.0);

  std::atomic<bool> cancelled{true};
  o.harness.cancelled = &cancelled;
  EXPECT_EQ(Quantize(*model, o).status().code(), absl::StatusCode::kCancelled);
  o.settings = {{false, {9, 32, ClipMethod::kNone, 0}, false}};
  EXPECT_EQ(Quantize(*model, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Quantize, DefaultGridIsThePapers) {
  const std::vector<QuantizeSetting> grid = DefaultQuantizeSettings();
  ASSERT_EQ(grid.size(), 11u);
  EXPECT_TRUE(grid[0].full_precision);
  EXPECT_EQ(grid[1].Name(), "INT4 btensor");
  EXPECT_EQ(grid[2].Name(), "INT4 btensor z=9 +SW");
  EXPECT_EQ(grid[10].Name(), "INT4 b16384 z=9 +SW");
}

TEST(CheckComparable, TheFirstDifferenceIsNamedBeforeAnyWork) {
  const auto model = testing::TinyStories();
  EXPECT_TRUE(CheckComparable(*model, *model).ok());
  auto other = OpenModel(testing::TestData("stories260K/stories260K.bin"));
  ASSERT_TRUE(other.ok()) << other.status();
  absl::Status s = CheckComparable(*model, **other);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("differ in shape"), std::string::npos) << s;
  CheckOptions options;
  EXPECT_EQ(CheckQuantization(*model, **other, options).status().message(), s.message());
}

}  // namespace
}  // namespace superweight::quantize_test
