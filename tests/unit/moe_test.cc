// Mixture-of-experts layers on a small model made in memory: routing, per-expert edits and
// pruning against the same model with its weights changed, the validation of expert
// coordinates, and the super-expert rule. (The forward pass against transformers and llama.cpp:
// tests/oracle/test_moe_oracle.py.)
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "engine/analysis/ablate.h"
#include "engine/analysis/locate.h"
#include "engine/runtime/forward.h"
#include "gtest/gtest.h"

namespace superweight::moe_test {
namespace {

constexpr int kHidden = 32, kExperts = 4, kExpertWidth = 16, kLayers = 2, kVocab = 64;

// A Mixtral-like model (4 experts, 2 per token), f32 weights in `storage`, views in the model.
struct TinyMoe {
  std::vector<std::vector<float>> storage;
  Model model;

  Matrix Add(int64_t rows, int64_t cols, std::mt19937* gen, float scale = 0.3f) {
    std::normal_distribution<float> normal(0.f, scale);
    storage.emplace_back(rows * cols);
    for (float& x : storage.back()) x = normal(*gen);
    return Matrix::Make(DType::kF32, rows, cols,
                        reinterpret_cast<const uint8_t*>(storage.back().data()));
  }
  float* Data(const Matrix& m) {
    return const_cast<float*>(reinterpret_cast<const float*>(m.data));
  }
};

std::unique_ptr<TinyMoe> MakeTinyMoe(uint32_t seed = 7) {
  auto t = std::make_unique<TinyMoe>();
  t->storage.reserve(64);
  std::mt19937 gen(seed);
  ModelConfig& c = t->model.config;
  c.arch = Architecture::kMixtral;
  c.hidden = kHidden;
  c.intermediate = kExpertWidth;
  c.layers = kLayers;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = kHidden / 4;
  c.vocab = kVocab;
  c.rope.rotary_dim = c.head_dim;
  c.experts = kExperts;
  c.experts_per_token = 2;
  c.expert_intermediate = kExpertWidth;
  c.norm_topk = true;
  t->model.embed = t->Add(kVocab, kHidden, &gen, 1.f);
  t->model.lm_head = t->Add(kVocab, kHidden, &gen);
  t->model.final_norm.assign(kHidden, 1.f);
  t->model.layers.resize(kLayers);
  for (LayerWeights& w : t->model.layers) {
    w.attn_norm.assign(kHidden, 1.f);
    w.ffn_norm.assign(kHidden, 1.f);
    w.Get(LinearKind::kQ) = t->Add(kHidden, kHidden, &gen);
    w.Get(LinearKind::kK) = t->Add(kHidden / 2, kHidden, &gen);
    w.Get(LinearKind::kV) = t->Add(kHidden / 2, kHidden, &gen);
    w.Get(LinearKind::kO) = t->Add(kHidden, kHidden, &gen);
    w.router = t->Add(kExperts, kHidden, &gen, 1.f);
    for (int e = 0; e < kExperts; ++e) {
      w.experts.push_back({t->Add(kExpertWidth, kHidden, &gen), t->Add(kExpertWidth, kHidden, &gen),
                           t->Add(kHidden, kExpertWidth, &gen)});
    }
  }
  return t;
}

std::vector<float> Logits(const Model& m, const std::vector<int32_t>& ids,
                          const EditSet* edits = nullptr) {
  SequenceInput in{ids, edits};
  auto out = RunForward(m, {&in, 1}, {});
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<float> logits(ids.size() * kVocab);
  EXPECT_TRUE(
      ComputeLogits(m, out->hidden.data(), ids.size(), logits.data(), Precision::kF32).ok());
  return logits;
}

// Which experts the tokens of layer `layer` reach, from a tap.
class RoutedTap : public ForwardTap {
 public:
  void OnDownProj(int, int, const float*, const float*, int, int, int) override {}
  void OnExpertDownProj(int layer, int expert, int, const int* positions, const float*,
                        const float*, int rows, int, int) override {
    if (layer == 0) rows_[expert] += rows;
    for (int r = 1; r < rows; ++r) EXPECT_LT(positions[r - 1], positions[r]);
  }
  int rows_[kExperts] = {};
};

const std::vector<int32_t> kIds = {1, 5, 9, 33, 2, 60, 17, 17, 40, 3};

// How many of kIds's tokens reach each expert of layer 0, with `edits`.
std::vector<int> RowsPerExpert(const Model& m, const EditSet* edits = nullptr) {
  RoutedTap tap;
  SequenceInput in{kIds, edits};
  ForwardOptions options;
  options.tap = &tap;
  EXPECT_TRUE(RunForward(m, {&in, 1}, options).ok());
  return std::vector<int>(tap.rows_, tap.rows_ + kExperts);
}

int Sum(const std::vector<int>& v) {
  int total = 0;
  for (int x : v) total += x;
  return total;
}

TEST(Moe, EveryTokenReachesItsTopTwoExperts) {
  auto t = MakeTinyMoe();
  EXPECT_EQ(Sum(RowsPerExpert(t->model)), 2 * static_cast<int>(kIds.size()));
}

TEST(Moe, AnExpertsWeightEditIsThatWeightChanged) {
  auto edited = MakeTinyMoe(), changed = MakeTinyMoe();
  for (LinearKind kind : {LinearKind::kGate, LinearKind::kDown}) {
    const Matrix& m = *changed->model.layers[1].Find(kind, 2);
    changed->Data(m)[3 * m.cols + 5] = 4.f;
  }
  EditSet edits;
  edits.weights.push_back({1, LinearKind::kGate, 3, 5, 4.f, 2});
  edits.weights.push_back({1, LinearKind::kDown, 3, 5, 4.f, 2});
  ASSERT_TRUE(edits.Validate(edited->model).ok());
  const std::vector<float> a = Logits(edited->model, kIds, &edits);
  const std::vector<float> b = Logits(changed->model, kIds);
  const std::vector<float> intact = Logits(edited->model, kIds);
  double moved = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-5);
    moved = std::max(moved, std::fabs(static_cast<double>(a[i]) - intact[i]));
  }
  EXPECT_GT(moved, 1e-3);  // the edit reached an expert some token is routed to
}

// Every expert's report, per layer, expert and sequence: positions and outputs.
class ExpertRecorder : public ForwardTap {
 public:
  void OnDownProj(int, int, const float*, const float*, int, int, int) override {}
  void OnExpertDownProj(int layer, int expert, int sequence, const int* positions, const float*,
                        const float* output, int rows, int, int hidden) override {
    Report& r = reports[{layer, expert, sequence}];
    r.positions.assign(positions, positions + rows);
    r.outputs.assign(output, output + static_cast<int64_t>(rows) * hidden);
  }
  struct Report {
    std::vector<int> positions;
    std::vector<float> outputs;
  };
  std::map<std::tuple<int, int, int>, Report> reports;
};

// A tree's branches reach the experts each reaches alone, at the same positions, and the tap
// hears them as those sequences.
TEST(Moe, ATreesBranchesAreReportedAsTheirSequencesAlone) {
  auto t = MakeTinyMoe();
  const std::vector<int32_t> prefix(kIds.begin(), kIds.begin() + 6);
  const std::vector<int32_t> first(kIds.begin() + 6, kIds.end()), second = {50, 51, 52};
  std::vector<int32_t> tree_tokens = prefix;
  tree_tokens.insert(tree_tokens.end(), first.begin(), first.end());
  tree_tokens.insert(tree_tokens.end(), second.begin(), second.end());
  const std::vector<int64_t> branches = {static_cast<int64_t>(first.size()),
                                         static_cast<int64_t>(second.size())};
  std::vector<int32_t> second_alone = prefix;
  second_alone.insert(second_alone.end(), second.begin(), second.end());
  ExpertRecorder tree_tap, alone_tap;
  ForwardOptions options;
  options.tap = &tree_tap;
  const SequenceInput tree(tree_tokens, nullptr, branches);
  ASSERT_TRUE(RunForward(t->model, {&tree, 1}, options).ok());
  options.tap = &alone_tap;
  const std::vector<SequenceInput> alone = {{kIds}, {second_alone}};
  ASSERT_TRUE(RunForward(t->model, alone, options).ok());
  ASSERT_EQ(tree_tap.reports.size(), alone_tap.reports.size());
  for (const auto& [key, want] : alone_tap.reports) {
    SCOPED_TRACE(std::get<2>(key));
    const auto it = tree_tap.reports.find(key);
    ASSERT_NE(it, tree_tap.reports.end());
    EXPECT_EQ(it->second.positions, want.positions);
    ASSERT_EQ(it->second.outputs.size(), want.outputs.size());
    for (size_t i = 0; i < want.outputs.size(); ++i) {
      EXPECT_NEAR(it->second.outputs[i], want.outputs[i], 1e-5f * (1 + std::fabs(want.outputs[i])));
    }
  }
}

TEST(Moe, PruningAnExpertRoutesAroundIt) {
  auto t = MakeTinyMoe();
  const std::vector<int> rows = RowsPerExpert(t->model);
  const int busiest = static_cast<int>(std::max_element(rows.begin(), rows.end()) - rows.begin());
  EditSet prune;
  prune.pruned_experts.push_back({0, busiest});
  const std::vector<int> after = RowsPerExpert(t->model, &prune);
  EXPECT_EQ(after[busiest], 0);
  EXPECT_EQ(Sum(after), 2 * static_cast<int>(kIds.size()));  // still two experts per token
}

TEST(Moe, ExpertCoordinatesAreCheckedAgainstTheModel) {
  auto t = MakeTinyMoe();
  const Model& m = t->model;
  EXPECT_TRUE(CheckSuperWeights(m, {{1, 3, 5, 2}}).ok());
  const absl::Status far = CheckSuperWeights(m, {{1, 3, 5, 4}});
  EXPECT_NE(far.message().find("expert 4 outside layer 1's 4 experts"), std::string::npos) << far;
  const absl::Status dense = CheckSuperWeights(m, {{1, 3, 5}});
  EXPECT_NE(dense.message().find("layer 1 has no down_proj of its own"), std::string::npos)
      << dense;
  const absl::Status twice = CheckSuperWeights(m, {{1, 3, 5, 2}, {1, 3, 5, 2}});
  EXPECT_NE(twice.message().find("layers[1].mlp.experts[2].down_proj.weight[3, 5] is given more"),
            std::string::npos)
      << twice;
  EXPECT_TRUE(CheckSuperWeights(m, {{1, 3, 5, 2}, {1, 3, 5, 1}}).ok());  // two experts
  EditSet prune;
  prune.pruned_experts.push_back({0, kExperts});
  EXPECT_EQ(prune.Validate(m).code(), absl::StatusCode::kInvalidArgument);
  EditSet dense_edit;
  dense_edit.weights.push_back({0, LinearKind::kDown, 0, 0, 0.f});
  EXPECT_NE(dense_edit.Validate(m).message().find("layer 0 has no down_proj"), std::string::npos);
}

TEST(SuperExperts, ThePublishedRule) {
  std::vector<ExpertMax> maxima;
  for (int l = 0; l < 4; ++l) {
    for (int e = 0; e < 64; ++e) maxima.push_back({l, e, 1.f + 0.01f * ((l * 64 + e) % 7)});
  }
  maxima[70].output_max_abs = 500.f;  // layer 1, expert 6
  std::vector<ExpertMax> flagged = SuperExperts(maxima);
  ASSERT_EQ(flagged.size(), 1u);
  EXPECT_EQ(std::make_pair(flagged[0].layer, flagged[0].expert), std::make_pair(1, 6));
  // Above the percentile but below a tenth of the largest: not flagged.
  maxima[71].output_max_abs = 40.f;
  maxima[72].output_max_abs = 45.f;
  flagged = SuperExperts(maxima);
  ASSERT_EQ(flagged.size(), 1u);
  // All alike: none above the 99.5th percentile.
  for (ExpertMax& m : maxima) m.output_max_abs = 3.f;
  EXPECT_TRUE(SuperExperts(maxima).empty());
  EXPECT_TRUE(SuperExperts({}).empty());
  // The largest of ordinary maxima is above the percentile of few experts: below Locate's spike
  // threshold it is no super expert.
  maxima[5].output_max_abs = 11.f;
  EXPECT_EQ(SuperExperts(maxima).size(), 1u);
  EXPECT_TRUE(SuperExperts(maxima, 50.f).empty());
}

}  // namespace
}  // namespace superweight::moe_test
