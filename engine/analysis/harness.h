// The evaluation harness: WikiText-2 perplexity and the zero-shot tasks (eval_tasks.h) scored
// as lm-evaluation-harness 0.4 scores them, under any ablation given as per-sequence edit sets.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/analysis/eval_tasks.h"
#include "engine/analysis/score.h"  // BatchEdits
#include "engine/runtime/forward.h"

namespace superweight {

struct HarnessOptions {
  Precision precision = Precision::kF32;
  BatchEdits edits;  // the one setting evaluated (EvaluateSettings and *PerSetting take theirs)
  int64_t max_batch_tokens = 4096;  // tokens per forward pass
  int max_context = 2048;           // longer requests keep their last tokens, as lm-eval does
  // A multiple-choice example's choices as one sequence of their common prefix and a branch
  // each (a tree, forward.h): the context runs once. Off: each choice alone, as lm-eval runs it.
  bool share_prefixes = true;
  const std::atomic<bool>* cancelled = nullptr;
  // Requests (or windows) done so far, out of the call's total.
  std::function<void(int64_t done, int64_t total)> on_progress;
};

struct Loglikelihood {
  double logprob = 0;   // sum over the continuation's tokens
  bool greedy = false;  // every continuation token is the argmax of its position
  int tokens = 0;       // the continuation's tokens
};

// lm-eval's loglikelihood: the context's trailing spaces moved to the continuation, the
// continuation's tokens taken as encode(context + continuation) past encode(context), no BOS.
// FAILED_PRECONDITION for a model without a tokenizer.
absl::StatusOr<std::vector<Loglikelihood>> ScoreLoglikelihoods(
    const Model& model, absl::Span<const LoglikelihoodRequest> requests,
    const HarnessOptions& options);

// The same under each of `settings` at once (options.edits not read; shared as EvaluateSettings
// shares): [setting][request]. group_sizes cuts the requests into consecutive groups (a
// multiple-choice example's choices; empty: each request alone); with options.share_prefixes
// a group's requests run as one tree of their common prefix (forward.h), their numbers those
// each has alone: bit for bit where the attention kernel is AVX-512's or AMX's both for the
// prefix and for each whole choice (not where a sliding window hides keys of the longer one, or
// scores are soft-capped: oneDNN's path). Not on a model that quantizes its activations (each
// choice then runs alone).
absl::StatusOr<std::vector<std::vector<Loglikelihood>>> ScoreLoglikelihoodsPerSetting(
    const Model& model, absl::Span<const LoglikelihoodRequest> requests,
    absl::Span<const size_t> group_sizes, const HarnessOptions& options,
    absl::Span<const BatchEdits> settings);

struct TaskScore {
  std::string task;
  int examples = 0;
  double acc = 0;
  double acc_norm = std::numeric_limits<double>::quiet_NaN();    // multiple choice with norm
  double perplexity = std::numeric_limits<double>::quiet_NaN();  // LAMBADA's last word
};

// A multiple-choice example's answers: acc's, the argmax of the summed log-probabilities (the
// first of equals), and acc_norm's, of the sums divided by each choice's length in characters
// (code points, the target delimiter excluded). lls: one per choice.
struct ChoicePicks {
  int acc = 0;
  int acc_norm = 0;
};
ChoicePicks PickChoices(const TaskExample& example, const Loglikelihood* lls);
// The length acc_norm divides by: the continuation's code points less the target delimiter.
int64_t ChoiceCharacters(const LoglikelihoodRequest& choice);

// The task's scores from its requests' log-likelihoods (lls: every example's choices in order):
// acc and acc_norm as PickChoices decides; LAMBADA: acc = greedy last word, perplexity =
// exp(-mean log-probability of the last word).
TaskScore ScoreTask(const Task& task, absl::Span<const Loglikelihood> lls);

// Every request of the task through ScoreLoglikelihoods, then ScoreTask.
absl::StatusOr<TaskScore> EvaluateTask(const Model& model, const Task& task,
                                       const HarnessOptions& options);

// Perplexity (score.h) over consecutive full windows of `window` tokens (at most max_windows;
// 0: all), with the harness's edits, batching, cancellation and progress.
absl::StatusOr<double> WindowedPerplexity(const Model& model, absl::Span<const int32_t> tokens,
                                          int window, int max_windows,
                                          const HarnessOptions& options);

// What a setting is evaluated on: the zero-shot tasks and WikiText-2 perplexity.
struct EvaluationPlan {
  std::vector<Task> tasks;         // loaded with LoadTask
  std::vector<int32_t> wikitext2;  // tokens; empty: no perplexity
  int window = 512;
  int max_windows = 0;
  int steps() const { return static_cast<int>(tasks.size()) + (wikitext2.empty() ? 0 : 1); }
};

struct Evaluation {
  std::vector<TaskScore> tasks;      // in the plan's order
  double wikitext2_perplexity = -1;  // -1 when not asked
  double average_acc = -1;           // over the zero-shot tasks run (the paper's); -1 when none
};

// A job's progress over a number of harness calls (steps): Next() gives the options of the next
// one, which counts as `steps` of them (a call evaluating several settings at once counts one
// per setting), and reports its own progress as a fraction of the job, labelled `what`.
class StepProgress {
 public:
  StepProgress(const HarnessOptions& base, int total_steps,
               std::function<void(double, const std::string&)> report)
      : base_(base), total_(std::max(1, total_steps)), report_(std::move(report)) {}
  HarnessOptions Next(const std::string& what, int steps = 1);
  void Done() const {
    if (report_) report_(1.0, "done");
  }

 private:
  HarnessOptions base_;
  int total_;
  int started_ = 0;
  std::function<void(double, const std::string&)> report_;
};

// The plan's perplexity and tasks on one setting (`edits` on `model`), each a step labelled
// "LABEL / TASK".
absl::StatusOr<Evaluation> EvaluateModel(const Model& model, const EvaluationPlan& plan,
                                         const BatchEdits& edits, const std::string& label,
                                         StepProgress* progress);

// The plan on several settings at once (settings[i]: the i-th's edits), one Evaluation per
// setting, each bit for bit what EvaluateModel gives the setting alone. Batch after batch, as
// each setting alone is batched: the batch's intact pass runs once up to the first layer a
// setting edits (and as far as an edit hook asks), and each setting continues from a copy of it,
// or of a setting's before it that edits the layers below alike (SettingPasses), so settings
// share the layers below where they part. A task's examples run their choices as trees
// (HarnessOptions::share_prefixes). At most one batch's streams are held at a time. Each step
// (WikiText-2, each task) counts as settings.size() steps of `progress`, advancing as each setting
// finishes a batch, labelled "LABEL / TASK".
absl::StatusOr<std::vector<Evaluation>> EvaluateSettings(const Model& model,
                                                         const EvaluationPlan& plan,
                                                         absl::Span<const BatchEdits> settings,
                                                         const std::string& label,
                                                         StepProgress* progress);

// For each context, the probability of each of `candidates` as the next token.
absl::StatusOr<std::vector<std::vector<double>>> NextTokenProbabilities(
    const Model& model, absl::Span<const std::vector<int32_t>> contexts,
    absl::Span<const int32_t> candidates, const HarnessOptions& options);
// The same under each of `settings` at once (options.edits not read), shared as EvaluateSettings
// shares: [setting][context][candidate].
absl::StatusOr<std::vector<std::vector<std::vector<double>>>> NextTokenProbabilitiesPerSetting(
    const Model& model, absl::Span<const std::vector<int32_t>> contexts,
    absl::Span<const int32_t> candidates, const HarnessOptions& options,
    absl::Span<const BatchEdits> settings);

}  // namespace superweight
