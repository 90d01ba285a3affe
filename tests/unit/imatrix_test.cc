#include "engine/analysis/imatrix.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "engine/formats/gguf.h"
#include "engine/runtime/forward.h"
#include "engine/util/mapped_file.h"
#include "tests/unit/test_util.h"

namespace superweight::imatrix_test {
namespace {

using ::testing::HasSubstr;
using testing::TinyStories;

std::vector<int32_t> Tokens(int n) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = 1 + (i * 37) % 400;
  return ids;
}

// Keeps layer 1's down input of every sequence, as the pass hands it over.
class DownInputs : public ActivationTransform {
 public:
  void Apply(int layer, LinearInputSite site, int64_t tokens, int64_t cols,
             float* x) const override {
    if (layer != 1 || site != LinearInputSite::kDown) return;
    rows.insert(rows.end(), x, x + tokens * cols);
    this->cols = cols;
  }
  mutable std::vector<float> rows;
  mutable int64_t cols = 0;
};

TEST(Imatrix, SumsEachColumnsSquaresOverEveryChunk) {
  const auto model = TinyStories();
  const std::vector<int32_t> ids = Tokens(3 * 24 + 5);  // three chunks and a partial one
  ImatrixOptions o;
  o.chunk = 24;
  o.batch_chunks = 2;  // a batch of two, then one
  o.dataset = "synthetic";
  auto m = ComputeImatrix(*model, ids, o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->chunks, 3);
  EXPECT_EQ(m->chunk_size, 24);
  EXPECT_EQ(m->datasets, std::vector<std::string>{"synthetic"});
  ASSERT_EQ(m->entries.size(), 7u * model->config.layers);
  for (size_t i = 1; i < m->entries.size(); ++i) {
    EXPECT_LT(m->entries[i - 1].name, m->entries[i].name);
  }
  for (const ImatrixEntry& e : m->entries) EXPECT_EQ(e.count, 72) << e.name;
  // q, k and v read one input: one sum.
  EXPECT_EQ(m->Find("blk.0.attn_q.weight")->in_sum2, m->Find("blk.0.attn_v.weight")->in_sum2);

  // The same chunks passed as three sequences, their down input of layer 1 summed here.
  DownInputs inputs;
  std::unique_ptr<Model> view = model->ShareWeights();
  view->activation_transform = &inputs;
  std::vector<SequenceInput> batch;
  for (int c = 0; c < 3; ++c) batch.push_back({absl::MakeConstSpan(ids).subspan(c * 24, 24)});
  ASSERT_TRUE(RunForward(*view, batch, ForwardOptions()).ok());
  const ImatrixEntry* down = m->Find("blk.1.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  ASSERT_EQ(static_cast<int64_t>(down->in_sum2.size()), inputs.cols);
  for (int64_t j = 0; j < inputs.cols; ++j) {
    double want = 0;
    for (size_t r = 0; r < inputs.rows.size() / inputs.cols; ++r) {
      want += double{inputs.rows[r * inputs.cols + j]} * inputs.rows[r * inputs.cols + j];
    }
    EXPECT_NEAR(down->in_sum2[j], want, 1e-5 * want + 1e-12) << j;
  }
}

TEST(Imatrix, FirstTokenReplacedAndBoostAndRefusals) {
  const auto model = TinyStories();
  const std::vector<int32_t> ids = Tokens(48);
  ImatrixOptions o;
  o.chunk = 24;
  auto plain = ComputeImatrix(*model, ids, o);
  o.first_token = 1;  // differs from ids[0] and ids[24]
  auto bos = ComputeImatrix(*model, ids, o);
  ASSERT_TRUE(plain.ok() && bos.ok());
  EXPECT_NE(plain->Find("blk.0.attn_q.weight")->in_sum2, bos->Find("blk.0.attn_q.weight")->in_sum2);

  Imatrix boosted = *plain;
  const SuperWeightCoordinate sw{1, 3, 5};
  ASSERT_TRUE(BoostSuperWeightColumns(*model, {&sw, 1}, 10, &boosted).ok());
  const auto& before = plain->Find("blk.1.ffn_down.weight")->in_sum2;
  const auto& after = boosted.Find("blk.1.ffn_down.weight")->in_sum2;
  for (size_t j = 0; j < before.size(); ++j) {
    EXPECT_FLOAT_EQ(after[j], j == 5 ? before[j] * 10 : before[j]) << j;
  }
  const SuperWeightCoordinate outside{1, 3, 1 << 20};
  EXPECT_EQ(BoostSuperWeightColumns(*model, {&outside, 1}, 10, &boosted).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BoostSuperWeightColumns(*model, {&sw, 1}, 0, &boosted).code(),
            absl::StatusCode::kInvalidArgument);

  o.chunk = 100;  // longer than the text
  auto none = ComputeImatrix(*model, ids, o);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("not one chunk"));
}

TEST(Imatrix, WrittenInLlamaCppsGgufLayout) {
  const auto model = TinyStories();
  ImatrixOptions o;
  o.chunk = 24;
  o.dataset = "a.txt";
  auto m = ComputeImatrix(*model, Tokens(48), o);
  ASSERT_TRUE(m.ok());
  const std::string path = testing::ScratchDir("imatrix") + "/m.imatrix.gguf";
  ASSERT_TRUE(WriteImatrixGguf(*m, path).ok());
  EXPECT_EQ(WriteImatrixGguf(*m, path).code(), absl::StatusCode::kAlreadyExists);
  auto mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok());
  auto gguf = ParseGguf((*mapped)->bytes(), path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_EQ(gguf->GetString("general.type"), "imatrix");
  EXPECT_EQ(gguf->Find("imatrix.datasets")->strings, std::vector<std::string>{"a.txt"});
  EXPECT_EQ(gguf->GetInt("imatrix.chunk_count"), 2);
  EXPECT_EQ(gguf->GetInt("imatrix.chunk_size"), 24);
  ASSERT_EQ(gguf->tensors.size(), 2 * m->entries.size());
  const ImatrixEntry& e = m->entries.front();
  const GgufTensor& sums = gguf->tensors.at(e.name + ".in_sum2");
  EXPECT_EQ(sums.ne, (std::vector<int64_t>{static_cast<int64_t>(e.in_sum2.size()), 1}));
  EXPECT_EQ(sums.dtype, DType::kF32);
  EXPECT_EQ(0, std::memcmp(sums.data, e.in_sum2.data(), e.in_sum2.size() * 4));
  const GgufTensor& counts = gguf->tensors.at(e.name + ".counts");
  EXPECT_EQ(counts.ne, (std::vector<int64_t>{1, 1}));
  float count;
  std::memcpy(&count, counts.data, 4);
  EXPECT_EQ(count, 48.f);
}

}  // namespace
}  // namespace superweight::imatrix_test
