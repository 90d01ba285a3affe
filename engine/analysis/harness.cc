#include "engine/analysis/harness.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "engine/analysis/score.h"
#include "engine/runtime/fast_math.h"
#include "engine/tokenizer/tokenizer.h"

namespace superweight {
namespace {

absl::Status Cancelled(const HarnessOptions& options) {
  if (options.cancelled != nullptr && options.cancelled->load(std::memory_order_relaxed)) {
    return absl::CancelledError("evaluation cancelled");
  }
  return absl::OkStatus();
}

// row = log-softmax(row), in place: the exponentials in f32, vectorized, summed in f32 a
// thousand at a time and in f64 across (a function of its own: GCC does not vectorize inside an
// OpenMP-outlined loop).
__attribute__((noinline)) void LogSoftmaxRow(float* row, int64_t n) {
  const float mx = MaxOf(row, n);
  double sum = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 1024) {
    const int64_t i1 = std::min(n, i0 + 1024);
    float part = 0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = i0; i < i1; ++i) part += FastExp(row[i] - mx);
    sum += part;
  }
  const float shift = mx + static_cast<float>(std::log(sum));
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) row[i] -= shift;
}

// Whether `target` is the row's argmax, the first of equals (as lm-eval's greedy check).
bool IsGreedy(const float* row, int64_t n, int32_t target) {
  const float mx = MaxOf(row, n);
  if (row[target] != mx) return false;
  for (int32_t i = 0; i < target; ++i) {
    if (row[i] == mx) return false;
  }
  return true;
}

// What one sequence of a forward pass carries: one request's input alone, or the inputs of
// requests that share a prefix (a multiple-choice example's choices) as a tree (forward.h).
struct PassUnit {
  std::vector<size_t> members;    // requests, in branch order
  std::vector<int32_t> tokens;    // the input; a tree's prefix, then each member's rest
  std::vector<int64_t> branches;  // a tree's; empty for one request alone
};

PassUnit Alone(const std::vector<std::vector<int32_t>>& inputs, size_t i) {
  return {{i}, inputs[i], {}};
}

// The requests of `group` as one tree of their common prefix, or each alone where they have none.
std::vector<PassUnit> UnitsOf(const std::vector<std::vector<int32_t>>& inputs,
                              const std::vector<size_t>& group) {
  size_t prefix = group.size() > 1 ? inputs[group[0]].size() : 0;
  for (size_t i : group) {
    const std::vector<int32_t>& in = inputs[i];
    prefix = std::min(prefix, in.size());
    prefix =
        std::mismatch(in.begin(), in.begin() + prefix, inputs[group[0]].begin()).first - in.begin();
  }
  std::vector<PassUnit> units;
  if (prefix == 0) {
    for (size_t i : group) units.push_back(Alone(inputs, i));
    return units;
  }
  PassUnit tree;
  tree.members = group;
  tree.tokens.assign(inputs[group[0]].begin(), inputs[group[0]].begin() + prefix);
  for (size_t i : group) {
    tree.tokens.insert(tree.tokens.end(), inputs[i].begin() + prefix, inputs[i].end());
    tree.branches.push_back(static_cast<int64_t>(inputs[i].size() - prefix));
  }
  units.push_back(std::move(tree));
  return units;
}

// The edits of a sequence's views (each in its view's rows) as one edit set in the sequence's
// rows; false where a tree cannot carry them: its views edit weights or experts differently, or
// the prefix's activations differently (restoring a super activation that only some choices
// see at its largest in the prefix).
bool EditsOfSequence(absl::Span<const SequenceView> views, absl::Span<const EditSet> view_edits,
                     EditSet* edits) {
  *edits = EditSet{};
  std::vector<ActivationEdit> prefix_edits;
  for (size_t v = 0; v < views.size(); ++v) {
    const EditSet& own = view_edits[v];
    std::vector<ActivationEdit> own_prefix;
    std::vector<ActivationEdit> own_branch;
    for (ActivationEdit e : own.activations) {
      if (e.token < views[v].prefix) {
        own_prefix.push_back(e);
      } else {
        e.token = static_cast<int>(views[v].RowOf(e.token));
        own_branch.push_back(e);
      }
    }
    if (v == 0) {
      edits->weights = own.weights;
      edits->pruned_experts = own.pruned_experts;
      prefix_edits = own_prefix;
      edits->activations = own_prefix;
    } else if (own.weights != edits->weights || own.pruned_experts != edits->pruned_experts ||
               own_prefix != prefix_edits) {
      return false;
    }
    edits->activations.insert(edits->activations.end(), own_branch.begin(), own_branch.end());
  }
  return true;
}

// Forward passes over units[order[0]], units[order[1]], ... in batches of at most
// max_batch_tokens, each batch under every setting (its intact pass shared up to the first
// layer a setting edits), and for each position p in positions[i] of each member request i, the
// log-softmax of the setting's logits at p handed to visit(setting, i, j, row) (j: p's index in
// positions[i]). The batches do not depend on the settings: each setting's rows are those it
// has alone. A setting whose edits a tree cannot carry (EditsOfSequence) has that tree's
// requests run again alone, in a pass of their own.
absl::Status VisitLogProbs(const Model& model, const std::vector<std::vector<int32_t>>& inputs,
                           const std::vector<std::vector<int>>& positions,
                           const std::vector<PassUnit>& units, const std::vector<size_t>& order,
                           const HarnessOptions& options, absl::Span<const BatchEdits> settings,
                           const std::function<void(size_t, size_t, size_t, const float*)>& visit) {
  const int64_t D = model.config.hidden, V = model.config.vocab;
  const int64_t S = static_cast<int64_t>(settings.size());
  // Logits [rows, vocab] at a time: 128 rows, fewer past 128K tokens of vocabulary (64 MiB).
  const int64_t rows_per_chunk = std::clamp<int64_t>((int64_t{1} << 24) / V, 16, 128);
  std::vector<float> hidden_rows(rows_per_chunk * D), logits(rows_per_chunk * V);
  ForwardOptions fo;
  fo.precision = options.precision;
  fo.cancelled = options.cancelled;
  int64_t requests = 0, requests_done = 0;
  for (size_t u : order) requests += static_cast<int64_t>(units[u].members.size());
  size_t next = 0;
  while (next < order.size()) {
    if (absl::Status s = Cancelled(options); !s.ok()) return s;
    std::vector<SequenceInput> intact_batch;
    std::vector<size_t> view_requests;  // the request of each view of the batch
    int64_t tokens = 0;
    while (next < order.size()) {
      const PassUnit& unit = units[order[next]];
      const int64_t n = static_cast<int64_t>(unit.tokens.size());
      if (!intact_batch.empty() && tokens + n > options.max_batch_tokens) break;
      intact_batch.push_back({unit.tokens, nullptr, unit.branches});
      view_requests.insert(view_requests.end(), unit.members.begin(), unit.members.end());
      tokens += n;
      ++next;
    }
    const std::vector<SequenceView> views = ViewsOf(intact_batch);
    std::vector<std::vector<int32_t>> view_sequences;
    for (size_t i : view_requests) view_sequences.push_back(inputs[i]);
    IntactPass intact(model, intact_batch, fo);
    // Each setting's edits per sequence of the batch, and the views a tree could not carry.
    std::vector<std::vector<EditSet>> setting_edits(settings.size());
    std::vector<std::vector<size_t>> views_alone(settings.size());
    std::vector<std::vector<EditSet>> view_edits(settings.size());
    for (size_t setting = 0; setting < settings.size(); ++setting) {
      absl::StatusOr<std::vector<EditSet>> own =
          EditsOfBatch(settings[setting], view_sequences, &intact);
      if (!own.ok()) return own.status();
      view_edits[setting] = std::move(*own);
      setting_edits[setting].resize(intact_batch.size());
      for (size_t v0 = 0; v0 < views.size();) {
        size_t v1 = v0;
        while (v1 < views.size() && views[v1].sequence == views[v0].sequence) ++v1;
        const absl::Span<const SequenceView> sequence_views(&views[v0], v1 - v0);
        if (!EditsOfSequence(sequence_views, {&view_edits[setting][v0], v1 - v0},
                             &setting_edits[setting][views[v0].sequence])) {
          setting_edits[setting][views[v0].sequence] = EditSet{};
          for (size_t v = v0; v < v1; ++v) views_alone[setting].push_back(v);
        }
        v0 = v1;
      }
    }
    // The wanted rows, a chunk at a time through the lm_head and a log-softmax.
    SettingPasses passes(model, intact_batch, setting_edits, &intact, fo);
    const std::vector<size_t>& setting_order = passes.order();
    for (size_t k = 0; k < setting_order.size(); ++k) {
      const size_t setting = setting_order[k];
      absl::StatusOr<ForwardOutput> out = passes.Run(k);
      if (!out.ok()) return out.status();
      // The views a tree could not carry, each alone with its own edits.
      std::vector<SequenceInput> alone_batch;
      std::vector<int> alone_index(views.size(), -1);
      for (size_t v : views_alone[setting]) {
        alone_index[v] = static_cast<int>(alone_batch.size());
        const EditSet& own = view_edits[setting][v];
        alone_batch.push_back({view_sequences[v], own.empty() ? nullptr : &own});
      }
      absl::StatusOr<ForwardOutput> alone_out = ForwardOutput{};
      if (!alone_batch.empty()) alone_out = RunForward(model, alone_batch, fo);
      if (!alone_out.ok()) return alone_out.status();
      // Each wanted row once, with every (view, j) it answers: a tree's last prefix row predicts
      // the first token of each of its choices.
      std::vector<const float*> wanted;
      std::vector<std::vector<std::pair<size_t, size_t>>> askers;  // per wanted row: (view, j)
      std::unordered_map<const float*, size_t> index_of;
      for (size_t v = 0; v < views.size(); ++v) {
        const std::vector<int>& at = positions[view_requests[v]];
        for (size_t j = 0; j < at.size(); ++j) {
          const float* row =
              alone_index[v] >= 0
                  ? &alone_out->hidden[(alone_out->offsets[alone_index[v]] + at[j]) * D]
                  : &out->hidden[(out->offsets[views[v].sequence] + views[v].RowOf(at[j])) * D];
          const auto [it, added] = index_of.try_emplace(row, wanted.size());
          if (added) {
            wanted.push_back(row);
            askers.emplace_back();
          }
          askers[it->second].push_back({v, j});
        }
      }
      for (size_t c0 = 0; c0 < wanted.size(); c0 += rows_per_chunk) {
        const int64_t rows = std::min<int64_t>(rows_per_chunk, wanted.size() - c0);
        for (int64_t r = 0; r < rows; ++r) std::copy_n(wanted[c0 + r], D, &hidden_rows[r * D]);
        if (absl::Status s =
                ComputeLogits(model, hidden_rows.data(), rows, logits.data(), options.precision);
            !s.ok()) {
          return s;
        }
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; ++r) LogSoftmaxRow(&logits[r * V], V);
        for (int64_t r = 0; r < rows; ++r) {
          for (const auto& [v, j] : askers[c0 + r]) {
            visit(setting, view_requests[v], j, &logits[r * V]);
          }
        }
      }
      // Each setting's share of the batch as it finishes: a batch under many settings is long.
      if (options.on_progress) {
        options.on_progress(requests_done * S + static_cast<int64_t>(view_requests.size()) *
                                                    static_cast<int64_t>(k + 1),
                            requests * S);
      }
    }
    requests_done += static_cast<int64_t>(view_requests.size());
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

}  // namespace

absl::StatusOr<std::vector<std::vector<Loglikelihood>>> ScoreLoglikelihoodsPerSetting(
    const Model& model, absl::Span<const LoglikelihoodRequest> requests,
    absl::Span<const size_t> group_sizes, const HarnessOptions& options,
    absl::Span<const BatchEdits> settings) {
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
  // The units of the passes (requests with nothing to score left out), longest first as
  // lm-eval orders its requests: passes of like lengths.
  std::vector<PassUnit> units;
  for (size_t first = 0, g = 0; first < requests.size(); ++g) {
    const size_t size = g < group_sizes.size() ? group_sizes[g] : 1;
    std::vector<size_t> group;
    for (size_t i = first; i < std::min(requests.size(), first + size); ++i) {
      if (!inputs[i].empty()) group.push_back(i);
    }
    first += size;
    // A model that quantizes its activations does so per sequence: its choices run alone.
    if (!options.share_prefixes || model.activation_transform != nullptr) {
      for (size_t i : group) units.push_back(Alone(inputs, i));
      continue;
    }
    for (PassUnit& unit : UnitsOf(inputs, group)) units.push_back(std::move(unit));
  }
  std::vector<size_t> order(units.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return units[a].tokens.size() > units[b].tokens.size();
  });
  const int64_t V = model.config.vocab;
  absl::Status s = VisitLogProbs(model, inputs, positions, units, order, options, settings,
                                 [&](size_t setting, size_t i, size_t j, const float* row) {
                                   Loglikelihood& result = results[setting][i];
                                   const int32_t target = targets[i][j];
                                   result.logprob += row[target];
                                   if (!IsGreedy(row, V, target)) result.greedy = false;
                                 });
  if (!s.ok()) return s;
  return results;
}

absl::StatusOr<std::vector<Loglikelihood>> ScoreLoglikelihoods(
    const Model& model, absl::Span<const LoglikelihoodRequest> requests,
    const HarnessOptions& options) {
  absl::StatusOr<std::vector<std::vector<Loglikelihood>>> results =
      ScoreLoglikelihoodsPerSetting(model, requests, {}, options, {&options.edits, 1});
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
  std::vector<size_t> group_sizes;  // an example's choices share its context
  for (const TaskExample& e : task.examples) {
    requests.insert(requests.end(), e.choices.begin(), e.choices.end());
    group_sizes.push_back(e.choices.size());
  }
  absl::StatusOr<std::vector<std::vector<Loglikelihood>>> lls =
      ScoreLoglikelihoodsPerSetting(model, requests, group_sizes, options, settings);
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
  std::vector<PassUnit> units;
  for (size_t i = 0; i < inputs.size(); ++i) units.push_back(Alone(inputs, i));
  absl::Status s = VisitLogProbs(model, inputs, positions, units, LongestFirst(inputs), options,
                                 settings, [&](size_t setting, size_t i, size_t, const float* row) {
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
