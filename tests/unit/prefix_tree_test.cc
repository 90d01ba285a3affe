// Trees (forward.h): a prefix run once with several branches after it gives each branch the rows
// the sequence prefix + branch has alone, edits and taps included; the harness runs a
// multiple-choice example's choices as one and scores them as each alone.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/analysis/ablate.h"
#include "engine/analysis/eval_tasks.h"
#include "engine/analysis/harness.h"
#include "engine/runtime/cpu.h"
#include "engine/runtime/forward.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::prefix_tree_test {
namespace {

using testing::EvalDataDir;
using testing::TinyStories;

// Every down_proj output a pass shows, per sequence (view) and layer.
class RecordingTap : public ForwardTap {
 public:
  void OnDownProj(int layer, int sequence, const float* input, const float* output, int tokens,
                  int intermediate, int hidden) override {
    if (static_cast<int>(outputs.size()) <= sequence) outputs.resize(sequence + 1);
    auto& layers = outputs[sequence];
    if (static_cast<int>(layers.size()) <= layer) layers.resize(layer + 1);
    layers[layer].assign(output, output + static_cast<int64_t>(tokens) * hidden);
    (void)input;
    (void)intermediate;
  }
  std::vector<std::vector<std::vector<float>>> outputs;  // [sequence][layer][token * hidden]
};

// Bit for bit where the engine's attention kernels serve (AVX-512 and up); below, oneDNN's
// attention sums a row's keys in an order that depends on the sequence's length, so a prefix
// attended alone and in each longer sequence differs in the last bits.
bool Exact(Isa isa) { return isa >= Isa::kAvx512; }

bool SameFloats(const float* a, const float* b, int64_t n, Isa isa) {
  if (Exact(isa)) return std::memcmp(a, b, n * sizeof(float)) == 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(a[i] - b[i]) > 1e-4f * (1.f + std::fabs(b[i]))) return false;
  }
  return true;
}

TEST(PrefixTree, BranchesAreTheirSequencesAlone) {
  const auto model = TinyStories();
  const int64_t D = model->config.hidden;
  const std::vector<int32_t> prefix =
      model->tokenizer->Encode("Once upon a time, a little girl named Lily", true);
  const std::vector<std::vector<int32_t>> rests = {
      model->tokenizer->Encode(" found a big red ball in the park", false),
      model->tokenizer->Encode(" went home", false),
      {},
      model->tokenizer->Encode(" smiled", false)};
  std::vector<int32_t> tree_tokens = prefix;
  std::vector<int64_t> branches;
  std::vector<std::vector<int32_t>> alone;
  for (const auto& rest : rests) {
    tree_tokens.insert(tree_tokens.end(), rest.begin(), rest.end());
    branches.push_back(static_cast<int64_t>(rest.size()));
    alone.push_back(prefix);
    alone.back().insert(alone.back().end(), rest.begin(), rest.end());
  }
  // Edits: an activation of the prefix (every branch's), one of the first branch's (its third
  // token) and a weight; in the tree's rows and in each sequence's.
  const int64_t P = static_cast<int64_t>(prefix.size());
  EditSet tree_edits;
  tree_edits.weights.push_back({1, LinearKind::kDown, 37, 101, 0.f});
  tree_edits.activations.push_back({0, 2, 5, 7.5f});
  tree_edits.activations.push_back({1, static_cast<int>(P + 2), 9, -3.f});
  EditSet shared_edits = tree_edits;
  shared_edits.activations.pop_back();
  EditSet first_edits = tree_edits;
  first_edits.activations.back().token = static_cast<int>(P + 2);
  // A plain sequence beside the tree in the batch.
  const std::vector<int32_t> other = model->tokenizer->Encode("The dog ran fast.", true);
  testing::ForEachCpuClass([&](Isa isa) {
    for (Precision precision : {Precision::kF32, Precision::kBF16}) {
      SCOPED_TRACE(PrecisionName(precision));
      RecordingTap tree_tap, alone_tap;
      ForwardOptions fo;
      fo.precision = precision;
      fo.tap = &tree_tap;
      const std::vector<SequenceInput> tree_batch = {{other, &shared_edits},
                                                     {tree_tokens, &tree_edits, branches}};
      auto tree = RunForward(*model, tree_batch, fo);
      ASSERT_TRUE(tree.ok()) << tree.status();
      std::vector<SequenceInput> alone_batch = {{other, &shared_edits}};
      for (size_t b = 0; b < alone.size(); ++b) {
        alone_batch.push_back({alone[b], b == 0 ? &first_edits : &shared_edits});
      }
      fo.tap = &alone_tap;
      auto plain = RunForward(*model, alone_batch, fo);
      ASSERT_TRUE(plain.ok()) << plain.status();
      const std::vector<SequenceView> views = ViewsOf(tree_batch);
      ASSERT_EQ(views.size(), alone_batch.size());
      ASSERT_EQ(tree_tap.outputs.size(), views.size());
      for (size_t v = 0; v < views.size(); ++v) {
        SCOPED_TRACE(v);
        ASSERT_EQ(views[v].size(), static_cast<int64_t>(alone_batch[v].tokens.size()));
        for (int64_t p = 0; p < views[v].size(); ++p) {
          const int64_t tree_row = tree->offsets[views[v].sequence] + views[v].RowOf(p);
          const int64_t plain_row = plain->offsets[v] + p;
          EXPECT_TRUE(
              SameFloats(&tree->hidden[tree_row * D], &plain->hidden[plain_row * D], D, isa))
              << "position " << p;
        }
        for (int layer = 0; layer < model->config.layers; ++layer) {
          const std::vector<float>& seen = tree_tap.outputs[v][layer];
          ASSERT_EQ(seen.size(), alone_tap.outputs[v][layer].size());
          EXPECT_TRUE(SameFloats(seen.data(), alone_tap.outputs[v][layer].data(),
                                 static_cast<int64_t>(seen.size()), isa))
              << "layer " << layer;
        }
      }
    }
  });
}

TEST(PrefixTree, BranchesLeavingNoPrefixAreRefused) {
  const auto model = TinyStories();
  const std::vector<int32_t> tokens = {1, 2, 3};
  for (const std::vector<int64_t>& branches :
       std::vector<std::vector<int64_t>>{{1, 2}, {3}, {4, -1}, {-1}}) {
    const SequenceInput input(tokens, nullptr, branches);
    EXPECT_EQ(RunForward(*model, {&input, 1}, {}).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// Every task with choices, scored with their contexts shared and each alone, under the table's
// settings and under edits a tree cannot carry (each choice restores a different value in the
// prefix: those run alone): the same numbers at every CPU class and precision, bit for bit where
// the engine's attention kernels serve (below, oneDNN's attention rounds some bf16 probabilities
// differently for a prefix alone and inside a choice: within 1e-5 relative in f32, 1e-3 in bf16).
TEST(PrefixTree, SharedChoicesScoreAsEachAlone) {
  const auto model = TinyStories();
  const std::vector<SuperWeightCoordinate> super_weights = {{1, 37, 101}};
  int64_t tree_rows = 0, request_tokens = 0;
  const BatchEdits disagreeing = [&](absl::Span<const std::vector<int32_t>> sequences,
                                     IntactPass* intact) -> absl::StatusOr<std::vector<EditSet>> {
    absl::StatusOr<ResidualStream> embedded = intact->Before(0);
    if (!embedded.ok()) return embedded.status();
    tree_rows += embedded->offsets.back();
    std::vector<EditSet> edits(sequences.size());
    for (size_t s = 0; s < sequences.size(); ++s) {
      request_tokens += static_cast<int64_t>(sequences[s].size());
      edits[s].activations.push_back({0, 0, 3, static_cast<float>(sequences[s].size())});
    }
    return edits;
  };
  for (const char* name : {"piqa", "arc_easy", "hellaswag", "winogrande", "sciq"}) {
    SCOPED_TRACE(name);
    const Task task = LoadTask(name, EvalDataDir(), 3).value();
    std::vector<LoglikelihoodRequest> requests;
    std::vector<size_t> groups;
    for (const TaskExample& e : task.examples) {
      requests.insert(requests.end(), e.choices.begin(), e.choices.end());
      groups.push_back(e.choices.size());
    }
    testing::ForEachCpuClass([&](Isa isa) {
      for (Precision precision : {Precision::kF32, Precision::kBF16}) {
        SCOPED_TRACE(PrecisionName(precision));
        std::vector<BatchEdits> settings = {BatchEdits(), disagreeing};
        for (const char* setting : {"prune", "restore_sa"}) {
          settings.push_back(AblationEdits(*model, AblationSettings({setting}, {}).value().back(),
                                           super_weights, {}, precision)
                                 .value());
        }
        HarnessOptions options;
        options.precision = precision;
        options.max_batch_tokens = 160;  // several batches
        auto shared = ScoreLoglikelihoodsPerSetting(*model, requests, groups, options, settings);
        ASSERT_TRUE(shared.ok()) << shared.status();
        options.share_prefixes = false;
        auto alone = ScoreLoglikelihoodsPerSetting(*model, requests, groups, options, settings);
        ASSERT_TRUE(alone.ok()) << alone.status();
        for (size_t s = 0; s < settings.size(); ++s) {
          for (size_t i = 0; i < requests.size(); ++i) {
            const double a = (*alone)[s][i].logprob;
            if (Exact(isa)) {
              EXPECT_EQ((*shared)[s][i].logprob, a) << "setting " << s << " request " << i;
              EXPECT_EQ((*shared)[s][i].greedy, (*alone)[s][i].greedy);
            } else {  // in bf16 a probability rounded the other way moves a choice more
              const double bound = precision == Precision::kBF16 ? 1e-3 : 1e-5;
              EXPECT_NEAR((*shared)[s][i].logprob, a, bound * (1 + std::fabs(a)))
                  << "setting " << s << " request " << i;
            }
          }
        }
        // The edits bite.
        EXPECT_NE((*shared)[2][0].logprob, (*shared)[0][0].logprob);
      }
    });
  }
  // The contexts ran once: fewer rows than the requests' tokens (half the calls ran alone).
  EXPECT_LT(tree_rows, request_tokens);
}

}  // namespace
}  // namespace superweight::prefix_tree_test
