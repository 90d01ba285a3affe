// The evaluation harness and the ablations: task files read as lm-evaluation-harness builds its
// requests, loglikelihoods against the forward pass, and each setting's edits.
#include "engine/analysis/ablate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <set>

#include "engine/analysis/eval_tasks.h"
#include "engine/analysis/harness.h"
#include "engine/analysis/score.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace superweight::ablate_test {
namespace {

using testing::EvalDataDir;
using testing::TinyStories;

TEST(EvalTasks, EveryTaskLoadsWithLmEvalsPrompts) {
  for (const std::string& name : ZeroShotTaskNames()) {
    auto task = LoadTask(name, EvalDataDir(), 3);
    ASSERT_TRUE(task.ok()) << name << ": " << task.status();
    EXPECT_EQ(task->examples.size(), 3u) << name;
  }
  auto piqa = *LoadTask("piqa", EvalDataDir(), 1);
  EXPECT_EQ(piqa.examples[0].choices.size(), 2u);
  EXPECT_EQ(piqa.examples[0].choices[0].context,
            "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:");
  EXPECT_EQ(piqa.examples[0].choices[0].continuation.rfind(" Provide the guinea pig", 0), 0u);
  EXPECT_EQ(piqa.examples[0].gold, 0);
  auto arc = *LoadTask("arc_easy", EvalDataDir(), 1);
  EXPECT_EQ(arc.examples[0].choices.size(), 4u);
  EXPECT_EQ(arc.examples[0].gold, 0);  // answerKey A
  auto sciq = *LoadTask("sciq", EvalDataDir(), 1);
  EXPECT_EQ(sciq.examples[0].gold, 3);  // the correct answer after the three distractors
  EXPECT_EQ(sciq.examples[0].choices[3].continuation, " oxidants");
  EXPECT_EQ(sciq.examples[0].choices[0].context.rfind("\nQuestion: Compounds", 0), 0u);
  // Winogrande: each option before the blank is a context; the rest of the sentence is shared.
  auto wino = *LoadTask("winogrande", EvalDataDir(), 1);
  ASSERT_EQ(wino.examples[0].choices.size(), 2u);
  EXPECT_EQ(wino.examples[0].choices[0].context,
            "Sarah was a much better surgeon than Maria so Sarah");
  EXPECT_EQ(wino.examples[0].choices[1].context,
            "Sarah was a much better surgeon than Maria so Maria");
  EXPECT_EQ(wino.examples[0].choices[0].continuation, " always got the easier cases.");
  EXPECT_EQ(wino.examples[0].gold, 1);
  // LAMBADA: the text up to its last space, and the last word with that space.
  auto lambada = *LoadTask("lambada", EvalDataDir(), 1);
  const auto& last = lambada.examples[0].choices[0];
  EXPECT_EQ(last.continuation.front(), ' ');
  EXPECT_EQ(last.continuation.find(' ', 1), std::string::npos);
  EXPECT_NE(last.context.back(), ' ');
  auto hellaswag = *LoadTask("hellaswag", EvalDataDir(), 1);
  EXPECT_EQ(hellaswag.examples[0].choices[0].context,
            "Roof shingle removal: A man is sitting on a roof. he");
  EXPECT_EQ(hellaswag.examples[0].gold, 3);
  EXPECT_EQ(LoadTask("piqa", EvalDataDir()).value().examples.size(), 1838u);
}

TEST(EvalTasks, UnknownMissingAndMalformedAreRefused) {
  EXPECT_EQ(LoadTask("mmlu", EvalDataDir()).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string dir = testing::ScratchDir("eval_tasks");
  EXPECT_EQ(LoadTask("piqa", dir).status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(std::system(("mkdir -p " + dir + "/arc " + dir + "/winogrande").c_str()), 0);
  std::ofstream(dir + "/arc/arc_easy_test.jsonl")
      << "{\"question\": \"q\", \"choices\": {\"text\": [\"a\"], \"label\": [\"A\"]}, "
         "\"answerKey\": \"A\"}\n{not json\n";
  auto arc = LoadTask("arc_easy", dir);
  EXPECT_EQ(arc.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(arc.status().message().find(":2:"), absl::string_view::npos) << arc.status();
  std::ofstream(dir + "/winogrande/dev.jsonl") << "{\"sentence\": \"no blank\", \"option1\": "
                                                  "\"a\", \"option2\": \"b\", \"answer\": \"1\"}\n";
  EXPECT_EQ(LoadTask("winogrande", dir).status().code(), absl::StatusCode::kDataLoss);
}

TEST(EvalTasks, HellaSwagPreprocessAsLmEval) {
  // Python's str.replace("  ", " ") is one pass: three spaces become two.
  EXPECT_EQ(HellaSwagPreprocess("  How to cook [title] Boil water.  [step] Stir.  "),
            "How to cook. Boil water.  Stir.");
  EXPECT_EQ(HellaSwagPreprocess("a [header] b"), "a b");
  EXPECT_EQ(HellaSwagPreprocess("open [ bracket"), "open [ bracket");
}

// The summed log-probability of a continuation equals the per-token log-probabilities of the
// whole sequence over the continuation's positions; greedy means every one is the argmax.
TEST(Harness, LoglikelihoodIsTheContinuationsShareOfTheSequence) {
  const auto model = TinyStories();
  const Tokenizer& tok = *model->tokenizer;
  const std::string context = "Once upon a time, there was a little",
                    continuation = " dog. The dog was happy.";
  HarnessOptions options;
  options.max_batch_tokens = 16;  // several passes
  std::vector<LoglikelihoodRequest> requests = {{context, continuation},
                                                {context + " ", "cat"},  // space moves over
                                                {"Tom had a red", " ball. He liked it a lot."}};
  auto lls = ScoreLoglikelihoods(*model, requests, options);
  ASSERT_TRUE(lls.ok()) << lls.status();
  // lm-eval's rule: the continuation is what encode(context + continuation) has past
  // encode(context)'s length.
  std::vector<int32_t> ids = tok.Encode(context + continuation, false);
  const size_t context_tokens = tok.Encode(context, false).size();
  ASSERT_GT(ids.size(), context_tokens);
  SequenceInput in{ids, nullptr};
  auto lp = TokenLogprobs(*model, {&in, 1}, Precision::kF32);
  ASSERT_TRUE(lp.ok());
  double want = 0;
  for (size_t t = context_tokens; t < ids.size(); ++t) want += (*lp)[0][t - 1];
  EXPECT_NEAR((*lls)[0].logprob, want, 1e-4);
  EXPECT_EQ((*lls)[0].tokens, static_cast<int>(ids.size() - context_tokens));
  EXPECT_EQ((*lls)[1].logprob,
            ScoreLoglikelihoods(*model, {{{context, " cat"}}}, {}).value()[0].logprob);
  EXPECT_GT((*lls)[2].tokens, 3);
  EXPECT_LT((*lls)[2].logprob, 0);
}

TEST(Harness, TaskScoresCountArgmaxAndLengthNormalizedChoices) {
  const auto model = TinyStories();
  Task task;
  task.name = "toy";
  TaskExample e;
  e.choices = {{"Once upon a time, there was a little", " girl"},
               {"Once upon a time, there was a little", " xylophone quantum"}};
  e.gold = 0;
  task.examples = {e, e};
  task.examples[1].gold = 1;
  auto score = EvaluateTask(*model, task, {});
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_EQ(score->examples, 2);
  EXPECT_DOUBLE_EQ(score->acc, 0.5);  // one of the two golds is the likelier choice
  EXPECT_FALSE(std::isnan(score->acc_norm));
  task.metric = TaskMetric::kLastWord;
  task.examples = {{{{"Once upon a time, there was a", " little"}}, 0}};
  auto last = EvaluateTask(*model, task, {});
  ASSERT_TRUE(last.ok());
  EXPECT_GT(last->perplexity, 1);
  EXPECT_TRUE(std::isnan(last->acc_norm));
}

TEST(Ablate, OutliersAreEachTensorsLargestAndSkipTheSuperWeights) {
  const auto model = TinyStories();
  auto edits = OutlierEdits(*model, 1e-6, {});
  ASSERT_TRUE(edits.ok()) << edits.status();
  EXPECT_EQ(edits->size(), static_cast<size_t>(7 * model->config.layers));  // one per tensor
  for (const WeightEdit& e : *edits) {
    const Matrix& w = model->layers[e.layer].Get(e.kind);
    const float largest = std::fabs(w.At(e.row, e.col));
    for (int64_t r = 0; r < w.rows; ++r) {
      for (int64_t c = 0; c < w.cols; ++c) ASSERT_LE(std::fabs(w.At(r, c)), largest);
    }
    EXPECT_EQ(e.value, 0.f);
  }
  // Named as a super weight, the largest of a down_proj is left out and the next one taken.
  const WeightEdit down = *std::find_if(edits->begin(), edits->end(), [](const WeightEdit& e) {
    return e.kind == LinearKind::kDown;
  });
  auto without = OutlierEdits(*model, 1e-6, {{down.layer, down.row, down.col}});
  ASSERT_TRUE(without.ok());
  for (const WeightEdit& e : *without) {
    EXPECT_FALSE(e.kind == LinearKind::kDown && e.layer == down.layer && e.row == down.row &&
                 e.col == down.col);
  }
  EXPECT_EQ(OutlierEdits(*model, 0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OutlierEdits(*model, 1e-6, {{99, 0, 0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Ablate, SettingsEditWhatTheyName) {
  const auto model = TinyStories();
  const std::vector<SuperWeightCoordinate> sw = {{1, 37, 101}};
  const float stored = model->layers[1].Get(LinearKind::kDown).At(37, 101);
  std::vector<std::vector<int32_t>> seqs = {model->tokenizer->Encode("Once upon a time", false)};
  auto edits_of = [&](AblationSetting s) {
    auto hook = AblationEdits(*model, s, sw, {}, Precision::kF32);
    EXPECT_TRUE(hook.ok()) << hook.status();
    if (!*hook) return EditSet();
    return (*hook)(seqs, nullptr).value()[0];
  };
  EXPECT_TRUE(edits_of({AblationKind::kIntact}).empty());
  EditSet prune = edits_of({AblationKind::kPruneSuperWeights});
  ASSERT_EQ(prune.weights.size(), 1u);
  EXPECT_EQ(prune.weights[0].value, 0.f);
  EditSet scaled = edits_of({AblationKind::kScaleSuperWeights, 2.5f});
  EXPECT_EQ(scaled.weights[0].value, 2.5f * stored);
  // Restore SA: the super weight at 0 and, at the token of the intact model's largest
  // |down_proj output[:, 37]| in layer 1, that output written back.
  EditSet restore = edits_of({AblationKind::kRestoreSuperActivation});
  ASSERT_EQ(restore.activations.size(), 1u);
  EXPECT_EQ(restore.activations[0].layer, 1);
  EXPECT_EQ(restore.activations[0].channel, 37);
  EXPECT_GE(restore.activations[0].token, 0);
  EXPECT_LT(restore.activations[0].token, static_cast<int>(seqs[0].size()));
  EXPECT_NE(restore.activations[0].value, 0.f);
  // Watched on the intact pass, the super activation is what a tap on the whole pass finds.
  for (Precision precision : {Precision::kF32, Precision::kBF16}) {
    auto hook = AblationEdits(*model, {AblationKind::kRestoreSuperActivation}, sw, {}, precision);
    ASSERT_TRUE(hook.ok());
    EXPECT_EQ((*hook)(seqs, nullptr).value()[0].activations[0].value,
              SuperActivations(*model, seqs[0], sw, precision).value()[0]);
  }
  EXPECT_EQ(
      AblationEdits(*model, {AblationKind::kPruneSuperWeights}, {{1, 9999, 0}}, {}, Precision::kF32)
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  auto names = AblationSettings({"prune", "scale", "outliers", "restore_sa"}, {0.f, 2.f});
  ASSERT_TRUE(names.ok());
  std::vector<std::string> got;
  for (const auto& s : *names) got.push_back(s.Name());
  EXPECT_EQ(got, (std::vector<std::string>{"intact", "prune SW", "scale SW x0", "scale SW x2",
                                           "prune outliers, SW kept", "prune outliers and SW",
                                           "prune SW, restore SA"}));
  EXPECT_EQ(AblationSettings({"bogus"}, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Scores equal as doubles, NaN (no acc_norm, no perplexity) equal to NaN.
void ExpectSameScores(const Evaluation& together, const Evaluation& alone) {
  auto same = [](double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; };
  EXPECT_EQ(together.wikitext2_perplexity, alone.wikitext2_perplexity);
  EXPECT_EQ(together.average_acc, alone.average_acc);
  ASSERT_EQ(together.tasks.size(), alone.tasks.size());
  for (size_t t = 0; t < alone.tasks.size(); ++t) {
    SCOPED_TRACE(alone.tasks[t].task);
    EXPECT_EQ(together.tasks[t].examples, alone.tasks[t].examples);
    EXPECT_EQ(together.tasks[t].acc, alone.tasks[t].acc);
    EXPECT_TRUE(same(together.tasks[t].acc_norm, alone.tasks[t].acc_norm))
        << together.tasks[t].acc_norm << " " << alone.tasks[t].acc_norm;
    EXPECT_TRUE(same(together.tasks[t].perplexity, alone.tasks[t].perplexity))
        << together.tasks[t].perplexity << " " << alone.tasks[t].perplexity;
  }
}

// Every setting evaluated together (the intact pass of each batch shared below the first layer a
// setting edits, the super activation watched on it) gives each setting's numbers bit for bit
// as it has alone: super weights in the middle layer (the pruned and scaled settings share layer
// 0), or in both layers, at both precisions (the forward pass's own test covers the lesser CPU
// classes; SUPERWEIGHT_MAX_ISA runs this one at them). Progress moves with each setting's share
// of each batch; cancellation stops it.
TEST(Ablate, SettingsEvaluatedTogetherEqualEachAlone) {
  const auto model = TinyStories();
  ASSERT_EQ(model->config.layers, 2);
  EvaluationPlan plan;
  for (const char* task : {"piqa", "lambada"}) {
    plan.tasks.push_back(LoadTask(task, EvalDataDir(), 4).value());
  }
  std::ifstream f(testing::TestData("text/tinystories_validation_head.txt"));
  std::string text((std::istreambuf_iterator<char>(f)), {});
  plan.wikitext2 = model->tokenizer->Encode(text, model->config.add_bos);
  plan.window = 64;
  plan.max_windows = 5;
  const std::vector<std::vector<SuperWeightCoordinate>> placements = {{{1, 37, 101}},
                                                                      {{0, 12, 40}, {1, 37, 101}}};
  for (const auto& super_weights : placements) {
    SCOPED_TRACE(super_weights.size());
    const std::vector<AblationSetting> settings =
        AblationSettings({"prune", "scale", "outliers", "restore_sa"}, {0.5f, 4.f}).value();
    const std::vector<WeightEdit> outliers = OutlierEdits(*model, 1e-6, super_weights).value();
    for (Precision precision : {Precision::kF32, Precision::kBF16}) {
      SCOPED_TRACE(PrecisionName(precision));
      HarnessOptions base;
      base.precision = precision;
      base.max_batch_tokens = 192;  // several batches per task, three windows per batch
      std::vector<BatchEdits> edits;
      for (const AblationSetting& s : settings) {
        edits.push_back(AblationEdits(*model, s, super_weights, outliers, precision).value());
      }
      std::vector<double> reported;
      StepProgress progress(base, static_cast<int>(settings.size()) * plan.steps(),
                            [&](double p, const std::string&) { reported.push_back(p); });
      auto together = EvaluateSettings(*model, plan, edits, "all", &progress);
      ASSERT_TRUE(together.ok()) << together.status();
      ASSERT_EQ(together->size(), settings.size());
      for (size_t s = 0; s < settings.size(); ++s) {
        SCOPED_TRACE(settings[s].Name());
        StepProgress alone_progress(base, plan.steps(), nullptr);
        auto alone = EvaluateModel(*model, plan, edits[s], settings[s].Name(), &alone_progress);
        ASSERT_TRUE(alone.ok()) << alone.status();
        ExpectSameScores((*together)[s], *alone);
      }
      // Not all alike: the edits bite.
      EXPECT_NE((*together)[1].wikitext2_perplexity, (*together)[0].wikitext2_perplexity);
      EXPECT_NE((*together)[3].wikitext2_perplexity, (*together)[0].wikitext2_perplexity);
      // Reported after each setting of each batch: more often than once per setting and step.
      EXPECT_GT(reported.size(), settings.size() * plan.steps());
      EXPECT_TRUE(std::is_sorted(reported.begin(), reported.end()));
      EXPECT_DOUBLE_EQ(reported.back(), 1.0);
    }
  }
  // Cancelled at the first report (one setting's share of the first batch): CANCELLED before the
  // next setting runs a layer.
  std::atomic<bool> cancelled{false};
  HarnessOptions base;
  base.cancelled = &cancelled;
  base.max_batch_tokens = 192;
  int reports = 0;
  StepProgress progress(base, 2 * plan.steps(), [&](double, const std::string&) {
    ++reports;
    cancelled = true;
  });
  const std::vector<BatchEdits> two = {
      BatchEdits(),
      AblationEdits(*model, {AblationKind::kPruneSuperWeights}, {{1, 37, 101}}, {}, Precision::kF32)
          .value()};
  EXPECT_EQ(EvaluateSettings(*model, plan, two, "two", &progress).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(reports, 1);
}

// The whole job on a small model: rows in order, scale x1 equal to intact, pruning a weight the
// model relies on costs perplexity, and cancellation ends it.
TEST(Ablate, TableOnASmallModel) {
  const auto model = TinyStories();
  AblateOptions o;
  o.super_weights = {{1, 37, 101}};
  o.settings = AblationSettings({"prune", "scale"}, {1.f, 100.f}).value();
  o.plan.tasks.push_back(LoadTask("piqa", EvalDataDir(), 4).value());
  std::ifstream f(testing::TestData("text/tinystories_validation_head.txt"));
  std::string text((std::istreambuf_iterator<char>(f)), {});
  o.plan.wikitext2 = model->tokenizer->Encode(text, model->config.add_bos);
  o.plan.window = 128;
  o.plan.max_windows = 2;
  o.token_probability_contexts = {model->tokenizer->Encode("Once upon a time there", false)};
  double last_progress = -1;
  o.on_progress = [&](double p, const std::string&) {
    EXPECT_GE(p, last_progress);
    last_progress = p;
  };
  auto r = Ablate(*model, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rows.size(), 4u);
  EXPECT_EQ(r->rows[0].setting.Name(), "intact");
  EXPECT_DOUBLE_EQ(r->rows[2].wikitext2_perplexity, r->rows[0].wikitext2_perplexity);  // x1
  EXPECT_NE(r->rows[3].wikitext2_perplexity, r->rows[0].wikitext2_perplexity);         // x100
  EXPECT_EQ(r->rows[0].tasks[0].examples, 4);
  EXPECT_GE(r->rows[0].average_acc, 0);
  EXPECT_DOUBLE_EQ(last_progress, 1.0);
  for (const TokenProbability& t : r->token_probabilities) {
    EXPECT_GT(t.intact, 0);
    EXPECT_LT(t.intact, 1);
  }
  // The settings share their passes (one EvaluateSettings call); each row is what the setting
  // gets alone, bit for bit, and so are the token probabilities.
  for (const AblationRow& row : r->rows) {
    SCOPED_TRACE(row.setting.Name());
    const BatchEdits edits =
        AblationEdits(*model, row.setting, o.super_weights, {}, o.harness.precision).value();
    StepProgress alone_progress(o.harness, o.plan.steps(), nullptr);
    auto alone = EvaluateModel(*model, o.plan, edits, row.setting.Name(), &alone_progress);
    ASSERT_TRUE(alone.ok()) << alone.status();
    Evaluation shared;
    shared.tasks = row.tasks;
    shared.wikitext2_perplexity = row.wikitext2_perplexity;
    shared.average_acc = row.average_acc;
    ExpectSameScores(shared, *alone);
  }
  for (bool pruned : {false, true}) {
    HarnessOptions h = o.harness;
    if (pruned) {
      h.edits = AblationEdits(*model, {AblationKind::kPruneSuperWeights}, o.super_weights, {},
                              o.harness.precision)
                    .value();
    }
    auto alone = NextTokenProbabilities(*model, o.token_probability_contexts,
                                        {r->token_probabilities[0].id}, h);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*alone)[0][0],
              pruned ? r->token_probabilities[0].pruned : r->token_probabilities[0].intact);
  }
  std::atomic<bool> cancelled{true};
  o.harness.cancelled = &cancelled;
  EXPECT_EQ(Ablate(*model, o).status().code(), absl::StatusCode::kCancelled);
}

TEST(Ablate, SuperWeightsNamedTwiceAndOutlierFractionsPastTheBoundAreRefused) {
  const auto model = TinyStories();
  absl::Status twice = CheckSuperWeights(*model, {{1, 3, 5}, {0, 3, 5}, {1, 3, 5}});
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(twice.message().find("layers[1].mlp.down_proj.weight[3, 5] is given more than once"),
            std::string::npos)
      << twice;
  EXPECT_TRUE(CheckSuperWeights(*model, {{1, 3, 5}, {0, 3, 5}, {1, 5, 3}}).ok());
  EXPECT_TRUE(OutlierEdits(*model, kMaxOutlierFraction, {}).ok());
  EXPECT_EQ(OutlierEdits(*model, kMaxOutlierFraction * 2, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OutlierEdits(*model, 0.5, {}).status().code(), absl::StatusCode::kInvalidArgument);
  std::atomic<bool> cancelled{true};
  EXPECT_EQ(OutlierEdits(*model, 1e-6, {}, &cancelled).status().code(),
            absl::StatusCode::kCancelled);
}

TEST(Ablate, ATaskTwiceInAPlanIsRefused) {
  const auto model = TinyStories();
  auto task = LoadTask("piqa", EvalDataDir(), 2);
  ASSERT_TRUE(task.ok()) << task.status();
  EvaluationPlan plan;
  plan.tasks = {*task, *task};
  StepProgress progress({}, plan.steps(), nullptr);
  auto evaluation = EvaluateModel(*model, plan, BatchEdits(), "intact", &progress);
  ASSERT_FALSE(evaluation.ok());
  EXPECT_NE(evaluation.status().message().find("task piqa is in the plan twice"),
            std::string::npos);
}

}  // namespace
}  // namespace superweight::ablate_test
