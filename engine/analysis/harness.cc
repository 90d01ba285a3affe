#include "engine/analysis/harness.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/analysis/score.h"
#include "engine/tokenizer/tokenizer.h"

namespace superweight {
namespace {

absl::Status Cancelled(const HarnessOptions& options) {
  if (options.cancelled != nullptr && options.cancelled->load(std::memory_order_relaxed)) {
    return absl::CancelledError("evaluation cancelled");
  }
  return absl::OkStatus();
}

// Forward passes over inputs[order[0]], inputs[order[1]], ... in batches of at most
// max_batch_tokens, each batch under every setting (its intact pass shared up to the first
// layer a setting edits), and for each position p in positions[i], the log-softmax of the
// setting's logits at p handed to visit(setting, i, j, row) (j: p's index in positions[i]).
// The batches do not depend on the settings: each setting's rows are those it has alone.
absl::Status VisitLogProbs(const Model& model, const std::vector<std::vector<int32_t>>& inputs,
                           const std::vector<std::vector<int>>& positions,
                           const std::vector<size_t>& order, const HarnessOptions& options,
                           absl::Span<const BatchEdits> settings,
                           const std::function<void(size_t, size_t, size_t, const float*)>& visit) {
  const int64_t D = model.config.hidden, V = model.config.vocab;
  const int64_t S = static_cast<int64_t>(settings.size());
  constexpr int64_t kRowsPerChunk = 32;
  std::vector<float> hidden_rows(kRowsPerChunk * D), logits(kRowsPerChunk * V);
  ForwardOptions fo;
  fo.precision = options.precision;
  fo.cancelled = options.cancelled;
  size_t next = 0;
  while (next < order.size()) {
    if (absl::Status s = Cancelled(options); !s.ok()) return s;
    const size_t first = next;
    std::vector<size_t> members;
    std::vector<std::vector<int32_t>> sequences;
    int64_t tokens = 0;
    while (next < order.size()) {
      const int64_t n = static_cast<int64_t>(inputs[order[next]].size());
      if (!members.empty() && tokens + n > options.max_batch_tokens) break;
      members.push_back(order[next]);
      sequences.push_back(inputs[order[next]]);
      tokens += n;
      ++next;
    }
    std::vector<SequenceInput> intact_batch;
    for (const auto& sequence : sequences) intact_batch.push_back({sequence, nullptr});
    IntactPass intact(model, intact_batch, fo);
    std::vector<std::vector<EditSet>> setting_edits;
    for (const BatchEdits& edits : settings) {
      absl::StatusOr<std::vector<EditSet>> own = EditsOfBatch(edits, sequences, &intact);
      if (!own.ok()) return own.status();
      setting_edits.push_back(std::move(*own));
    }
    // The wanted rows, a chunk at a time through the lm_head and a log-softmax.
    std::vector<std::pair<size_t, size_t>> wanted;  // (member, j)
    for (size_t b = 0; b < members.size(); ++b) {
      for (size_t j = 0; j < positions[members[b]].size(); ++j) wanted.push_back({b, j});
    }
    const std::vector<size_t> setting_order = SharingOrder(model, setting_edits);
    for (size_t k = 0; k < setting_order.size(); ++k) {
      const size_t setting = setting_order[k];
      std::vector<SequenceInput> batch = intact_batch;
      for (size_t b = 0; b < batch.size(); ++b) {
        const EditSet& own = setting_edits[setting][b];
        batch[b].edits = own.empty() ? nullptr : &own;
      }
      absl::StatusOr<ForwardOutput> out = intact.RunEdited(batch);
      if (!out.ok()) return out.status();
      for (size_t c0 = 0; c0 < wanted.size(); c0 += kRowsPerChunk) {
        const int64_t rows = std::min<int64_t>(kRowsPerChunk, wanted.size() - c0);
        for (int64_t r = 0; r < rows; ++r) {
          const auto [b, j] = wanted[c0 + r];
          const int64_t row = out->offsets[b] + positions[members[b]][j];
          std::copy_n(&out->hidden[row * D], D, &hidden_rows[r * D]);
        }
        if (absl::Status s =
                ComputeLogits(model, hidden_rows.data(), rows, logits.data(), options.precision);
            !s.ok()) {
          return s;
        }
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          float* l = &logits[r * V];
          const float mx = *std::max_element(l, l + V);
          double sum = 0;
          for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[v] - mx));
          const float shift = mx + static_cast<float>(std::log(sum));
          for (int64_t v = 0; v < V; ++v) l[v] -= shift;
        }
        for (int64_t r = 0; r < rows; ++r) {
          const auto [b, j] = wanted[c0 + r];
          visit(setting, members[b], j, &logits[r * V]);
        }
      }
      // Each setting's share of the batch as it finishes: a batch under many settings is long.
      if (options.on_progress) {
        options.on_progress(static_cast<int64_t>(first) * S +
                                static_cast<int64_t>(next - first) * static_cast<int64_t>(k + 1),
                            static_cast<int64_t>(order.size()) * S);
      }
    }
  }
  return absl::OkStatus();
}

// Indices of `inputs`, longest first (as lm-eval orders its requests): passes of like lengths.
std::vector<size_t> LongestFirst(const std::vector<std::vector<int32_t>>& inputs) {
  std::vector<size_t> order(inputs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return inputs[a].size() > inputs[b].size(); });
  return order;
}

int64_t CodePoints(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// ScoreLoglikelihoods under each of `settings`: one result per setting.
absl::StatusOr<std::vector<std::vector<Loglikelihood>>> ScoreLoglikelihoodsPerSetting(
    const Model& model, absl::Span<const LoglikelihoodRequest> requests,
    const HarnessOptions& options, absl::Span<const BatchEdits> settings) {
  if (model.tokenizer == nullptr) {
    return absl::FailedPreconditionError("the model has no tokenizer: text tasks need one");
  }
  const Tokenizer& tok = *model.tokenizer;
  std::vector<std::vector<int32_t>> inputs(requests.size());
  std::vector<std::vector<int>> positions(requests.size());
  std::vector<std::vector<int32_t>> targets(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    std::string context = requests[i].context, continuation = requests[i].continuation;
    const size_t kept = context.find_last_not_of(' ');
    const size_t spaces = kept == std::string::npos ? context.size() : context.size() - kept - 1;
    continuation = context.substr(context.size() - spaces) + continuation;
    context.resize(context.size() - spaces);
    std::vector<int32_t> whole = tok.Encode(context + continuation, /*add_bos=*/false);
    std::vector<int32_t> context_ids = tok.Encode(context, /*add_bos=*/false);
    if (context_ids.empty()) {  // lm-eval conditions an empty context on a prefix token
      const int prefix = tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
      if (prefix < 0)
        return absl::InvalidArgumentError("an empty context needs a BOS or EOS token");
      context_ids.push_back(prefix);
      whole.insert(whole.begin(), prefix);
    }
    const size_t first = std::min(context_ids.size(), whole.size());
    targets[i].assign(whole.begin() + first, whole.end());
    if (targets[i].empty()) continue;  // nothing to score: log p = 0
    // Left-truncated to max_context + 1 tokens; the last token is only predicted.
    const size_t begin = whole.size() > static_cast<size_t>(options.max_context) + 1
                             ? whole.size() - options.max_context - 1
                             : 0;
    inputs[i].assign(whole.begin() + begin, whole.end() - 1);
    for (size_t t = 0; t < targets[i].size(); ++t) {
      positions[i].push_back(static_cast<int>(whole.size() - 1 - targets[i].size() + t - begin));
    }
  }
  std::vector<Loglikelihood> unscored(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    unscored[i].greedy = true;
    unscored[i].tokens = static_cast<int>(targets[i].size());
  }
  std::vector<std::vector<Loglikelihood>> results(settings.size(), unscored);
  std::vector<size_t> order;
  for (size_t i : LongestFirst(inputs)) {
    if (!inputs[i].empty()) order.push_back(i);
  }
  const int64_t V = model.config.vocab;
  absl::Status s = VisitLogProbs(model, inputs, positions, order, options, settings,
                                 [&](size_t setting, size_t i, size_t j, const float* row) {
                                   Loglikelihood& result = results[setting][i];
                                   const int32_t target = targets[i][j];
                                   result.logprob += row[target];
                                   if (std::max_element(row, row + V) - row != target)
                                     result.greedy = false;
                                 });
  if (!s.ok()) return s;
  return results;
}

}  // namespace

absl::StatusOr<std::vector<Loglikelihood>> ScoreLoglikelihoods(
    const Model& model, absl::Span<const LoglikelihoodRequest> requests,
    const HarnessOptions& options) {
  absl::StatusOr<std::vector<std::vector<Loglikelihood>>> results =
      ScoreLoglikelihoodsPerSetting(model, requests, options, {&options.edits, 1});
  if (!results.ok()) return results.status();
  return std::move(results->front());
}

int64_t ChoiceCharacters(const LoglikelihoodRequest& choice) {
  return std::max<int64_t>(1, CodePoints(choice.continuation) - 1);
}

ChoicePicks PickChoices(const TaskExample& example, const Loglikelihood* lls) {
  ChoicePicks picks;
  double best_norm = -INFINITY;
  for (size_t c = 0; c < example.choices.size(); ++c) {
    if (lls[c].logprob > lls[picks.acc].logprob) picks.acc = static_cast<int>(c);
    const double norm = lls[c].logprob / static_cast<double>(ChoiceCharacters(example.choices[c]));
    if (norm > best_norm) {
      best_norm = norm;
      picks.acc_norm = static_cast<int>(c);
    }
  }
  return picks;
}

TaskScore ScoreTask(const Task& task, absl::Span<const Loglikelihood> lls) {
  TaskScore score;
  score.task = task.name;
  score.examples = static_cast<int>(task.examples.size());
  double correct = 0, correct_norm = 0, last_word_logprob = 0;
  size_t at = 0;
  for (const TaskExample& e : task.examples) {
    const Loglikelihood* ll = &lls[at];
    at += e.choices.size();
    if (task.metric == TaskMetric::kLastWord) {
      correct += ll[0].greedy;
      last_word_logprob += ll[0].logprob;
      continue;
    }
    const ChoicePicks picks = PickChoices(e, ll);
    correct += picks.acc == e.gold;
    correct_norm += picks.acc_norm == e.gold;
  }
  const double n = static_cast<double>(task.examples.size());
  score.acc = correct / n;
  if (task.metric == TaskMetric::kMultipleChoice) score.acc_norm = correct_norm / n;
  if (task.metric == TaskMetric::kLastWord) score.perplexity = std::exp(-last_word_logprob / n);
  return score;
}

namespace {

// EvaluateTask under each of `settings`.
absl::StatusOr<std::vector<TaskScore>> EvaluateTaskPerSetting(
    const Model& model, const Task& task, const HarnessOptions& options,
    absl::Span<const BatchEdits> settings) {
  std::vector<LoglikelihoodRequest> requests;
  for (const TaskExample& e : task.examples) {
    requests.insert(requests.end(), e.choices.begin(), e.choices.end());
  }
  absl::StatusOr<std::vector<std::vector<Loglikelihood>>> lls =
      ScoreLoglikelihoodsPerSetting(model, requests, options, settings);
  if (!lls.ok()) return lls.status();
  std::vector<TaskScore> scores;
  for (const std::vector<Loglikelihood>& setting_lls : *lls) {
    scores.push_back(ScoreTask(task, setting_lls));
  }
  return scores;
}

// WindowedPerplexity under each of `settings`.
absl::StatusOr<std::vector<double>> WindowedPerplexityPerSetting(
    const Model& model, absl::Span<const int32_t> tokens, int window, int max_windows,
    const HarnessOptions& options, absl::Span<const BatchEdits> settings) {
  PerplexityOptions po;
  po.window = window;
  po.max_windows = max_windows;
  po.batch_windows = static_cast<int>(std::max<int64_t>(1, options.max_batch_tokens / window));
  po.precision = options.precision;
  po.cancelled = options.cancelled;
  if (options.on_progress) {
    constexpr int64_t kSteps = 1000;  // the fraction Perplexity reports, as done out of total
    po.on_progress = [&options](double done) {
      options.on_progress(std::llround(done * kSteps), kSteps);
    };
  }
  absl::StatusOr<std::vector<PerplexityResult>> r =
      PerplexityPerSetting(model, tokens, po, settings);
  if (!r.ok()) return r.status();
  std::vector<double> perplexities;
  for (const PerplexityResult& setting : *r) perplexities.push_back(setting.perplexity);
  return perplexities;
}

}  // namespace

absl::StatusOr<TaskScore> EvaluateTask(const Model& model, const Task& task,
                                       const HarnessOptions& options) {
  absl::StatusOr<std::vector<TaskScore>> scores =
      EvaluateTaskPerSetting(model, task, options, {&options.edits, 1});
  if (!scores.ok()) return scores.status();
  return scores->front();
}

absl::StatusOr<double> WindowedPerplexity(const Model& model, absl::Span<const int32_t> tokens,
                                          int window, int max_windows,
                                          const HarnessOptions& options) {
  absl::StatusOr<std::vector<double>> perplexities = WindowedPerplexityPerSetting(
      model, tokens, window, max_windows, options, {&options.edits, 1});
  if (!perplexities.ok()) return perplexities.status();
  return perplexities->front();
}

absl::StatusOr<std::vector<std::vector<std::vector<double>>>> NextTokenProbabilitiesPerSetting(
    const Model& model, absl::Span<const std::vector<int32_t>> contexts,
    absl::Span<const int32_t> candidates, const HarnessOptions& options,
    absl::Span<const BatchEdits> settings) {
  std::vector<std::vector<int32_t>> inputs(contexts.begin(), contexts.end());
  std::vector<std::vector<int>> positions(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].empty()) return absl::InvalidArgumentError("an empty context");
    if (inputs[i].size() > static_cast<size_t>(options.max_context)) {
      inputs[i].erase(inputs[i].begin(), inputs[i].end() - options.max_context);
    }
    positions[i] = {static_cast<int>(inputs[i].size()) - 1};
  }
  for (int32_t c : candidates) {
    if (c < 0 || c >= model.config.vocab)
      return absl::InvalidArgumentError("candidate out of range");
  }
  std::vector<std::vector<std::vector<double>>> results(
      settings.size(),
      std::vector<std::vector<double>>(inputs.size(), std::vector<double>(candidates.size())));
  absl::Status s = VisitLogProbs(model, inputs, positions, LongestFirst(inputs), options, settings,
                                 [&](size_t setting, size_t i, size_t, const float* row) {
                                   for (size_t c = 0; c < candidates.size(); ++c) {
                                     results[setting][i][c] =
                                         std::exp(static_cast<double>(row[candidates[c]]));
                                   }
                                 });
  if (!s.ok()) return s;
  return results;
}

absl::StatusOr<std::vector<std::vector<double>>> NextTokenProbabilities(
    const Model& model, absl::Span<const std::vector<int32_t>> contexts,
    absl::Span<const int32_t> candidates, const HarnessOptions& options) {
  absl::StatusOr<std::vector<std::vector<std::vector<double>>>> results =
      NextTokenProbabilitiesPerSetting(model, contexts, candidates, options, {&options.edits, 1});
  if (!results.ok()) return results.status();
  return std::move(results->front());
}

HarnessOptions StepProgress::Next(const std::string& what, int steps) {
  HarnessOptions options = base_;
  const int step = started_;
  started_ += steps;
  auto report = report_;
  const int total = total_;
  options.on_progress = [report, step, steps, total, what](int64_t done, int64_t all) {
    if (report) {
      report((step + steps * static_cast<double>(done) / std::max<int64_t>(1, all)) / total, what);
    }
  };
  return options;
}

absl::StatusOr<Evaluation> EvaluateModel(const Model& model, const EvaluationPlan& plan,
                                         const BatchEdits& edits, const std::string& label,
                                         StepProgress* progress) {
  absl::StatusOr<std::vector<Evaluation>> evaluations =
      EvaluateSettings(model, plan, {&edits, 1}, label, progress);
  if (!evaluations.ok()) return evaluations.status();
  return std::move(evaluations->front());
}

absl::StatusOr<std::vector<Evaluation>> EvaluateSettings(const Model& model,
                                                         const EvaluationPlan& plan,
                                                         absl::Span<const BatchEdits> settings,
                                                         const std::string& label,
                                                         StepProgress* progress) {
  for (size_t i = 0; i < plan.tasks.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (plan.tasks[i].name == plan.tasks[j].name) {
        return absl::InvalidArgumentError(
            absl::StrCat("task ", plan.tasks[i].name,
                         " is in the plan twice (it would count twice in the "
                         "average)"));
      }
    }
  }
  const int steps = static_cast<int>(settings.size());
  std::vector<Evaluation> evaluations(settings.size());
  if (!plan.wikitext2.empty()) {
    const HarnessOptions h = progress->Next(label + " / wikitext2", steps);
    absl::StatusOr<std::vector<double>> ppl = WindowedPerplexityPerSetting(
        model, plan.wikitext2, plan.window, plan.max_windows, h, settings);
    if (!ppl.ok()) return ppl.status();
    for (size_t s = 0; s < settings.size(); ++s) evaluations[s].wikitext2_perplexity = (*ppl)[s];
  }
  std::vector<double> acc_sums(settings.size(), 0.0);
  for (const Task& task : plan.tasks) {
    const HarnessOptions h = progress->Next(label + " / " + task.name, steps);
    absl::StatusOr<std::vector<TaskScore>> scores =
        EvaluateTaskPerSetting(model, task, h, settings);
    if (!scores.ok()) return scores.status();
    for (size_t s = 0; s < settings.size(); ++s) {
      acc_sums[s] += (*scores)[s].acc;
      evaluations[s].tasks.push_back((*scores)[s]);
    }
  }
  if (!plan.tasks.empty()) {
    for (size_t s = 0; s < settings.size(); ++s) {
      evaluations[s].average_acc = acc_sums[s] / static_cast<double>(plan.tasks.size());
    }
  }
  return evaluations;
}

}  // namespace superweight
