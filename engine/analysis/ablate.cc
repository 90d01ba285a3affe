#include "engine/analysis/ablate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/formats/dequantize.h"
#include "engine/runtime/tap.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/utf8_prefix.h"

namespace superweight {
namespace {

constexpr LinearKind kLinearKinds[] = {LinearKind::kQ,   LinearKind::kK,    LinearKind::kV,
                                       LinearKind::kO,   LinearKind::kGate, LinearKind::kUp,
                                       LinearKind::kDown};

std::vector<WeightEdit> SuperWeightEdits(const Model& model,
                                         const std::vector<SuperWeightCoordinate>& super_weights,
                                         float scale) {
  std::vector<WeightEdit> edits;
  for (const SuperWeightCoordinate& sw : super_weights) {
    const float stored = DownProjOf(model, sw)->At(sw.row, sw.col);
    edits.push_back({sw.layer, LinearKind::kDown, sw.row, sw.col, scale * stored, sw.expert});
  }
  return edits;
}

// Per sequence and super weight: the token of the largest |down_proj output[:, row]| in the
// super weight's layer, and the output there.
class SuperActivationTap : public ForwardTap {
 public:
  SuperActivationTap(const std::vector<SuperWeightCoordinate>& super_weights, int sequences)
      : super_weights_(super_weights),
        found_(sequences, std::vector<std::pair<int, float>>(super_weights.size(), {-1, 0.f})) {}

  void OnDownProj(int layer, int sequence, const float* input, const float* output, int tokens,
                  int intermediate, int hidden) override {
    Observe(layer, -1, sequence, nullptr, output, tokens, hidden);
  }
  void OnExpertDownProj(int layer, int expert, int sequence, const int* positions,
                        const float* input, const float* output, int rows, int intermediate,
                        int hidden) override {
    Observe(layer, expert, sequence, positions, output, rows, hidden);
  }
  const std::vector<std::pair<int, float>>& found(int sequence) const { return found_[sequence]; }

 private:
  // rows of output [rows, hidden] at tokens positions[r] (r itself where null).
  void Observe(int layer, int expert, int sequence, const int* positions, const float* output,
               int rows, int hidden) {
    for (size_t i = 0; i < super_weights_.size(); ++i) {
      if (super_weights_[i].layer != layer || super_weights_[i].expert != expert) continue;
      auto& [token, value] = found_[sequence][i];
      for (int r = 0; r < rows; ++r) {
        const float v = output[static_cast<int64_t>(r) * hidden + super_weights_[i].row];
        if (token < 0 || std::fabs(v) > std::fabs(value)) {
          token = positions != nullptr ? positions[r] : r;
          value = v;
        }
      }
    }
  }

  const std::vector<SuperWeightCoordinate>& super_weights_;
  std::vector<std::vector<std::pair<int, float>>> found_;
};

}  // namespace

absl::StatusOr<std::vector<float>> SuperActivations(
    const Model& model, absl::Span<const int32_t> tokens,
    const std::vector<SuperWeightCoordinate>& super_weights, Precision precision) {
  if (absl::Status s = CheckSuperWeights(model, super_weights); !s.ok()) return s;
  SuperActivationTap tap(super_weights, 1);
  SequenceInput input{tokens, nullptr};
  ForwardOptions fo;
  fo.precision = precision;
  fo.tap = &tap;
  absl::StatusOr<ForwardOutput> out = RunForward(model, {&input, 1}, fo);
  if (!out.ok()) return out.status();
  std::vector<float> values;
  for (const auto& [token, value] : tap.found(0)) values.push_back(value);
  return values;
}

std::string SuperWeightCoordinate::Name() const {
  return expert < 0 ? absl::StrFormat("layers[%d].mlp.down_proj.weight[%d, %d]", layer, row, col)
                    : absl::StrFormat("layers[%d].mlp.experts[%d].down_proj.weight[%d, %d]", layer,
                                      expert, row, col);
}

const Matrix* DownProjOf(const Model& model, const SuperWeightCoordinate& coordinate) {
  if (coordinate.layer < 0 || coordinate.layer >= static_cast<int>(model.layers.size())) {
    return nullptr;
  }
  return model.layers[coordinate.layer].Find(LinearKind::kDown, coordinate.expert);
}

absl::Status CheckSuperWeights(const Model& model,
                               const std::vector<SuperWeightCoordinate>& super_weights) {
  for (const SuperWeightCoordinate& sw : super_weights) {
    if (sw.layer < 0 || sw.layer >= model.config.layers) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "super weight layer %d outside the model's %d layers", sw.layer, model.config.layers));
    }
    if (sw.expert >= 0 && model.config.experts == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("super weight %s: the model is not a mixture of experts", sw.Name()));
    }
    const Matrix* down = DownProjOf(model, sw);
    if (down == nullptr) {
      return absl::InvalidArgumentError(
          sw.expert >= 0
              ? absl::StrFormat("super weight expert %d outside layer %d's %d experts", sw.expert,
                                sw.layer, model.config.experts)
              : absl::StrFormat("layer %d has no down_proj of its own: name a super weight's "
                                "expert (LAYER:EXPERT,ROW,COL)",
                                sw.layer));
    }
    if (sw.row < 0 || sw.row >= down->rows || sw.col < 0 || sw.col >= down->cols) {
      SuperWeightCoordinate whole = sw;
      whole.row = down->rows;
      whole.col = down->cols;
      return absl::InvalidArgumentError(
          absl::StrFormat("super weight %s outside %s", sw.Name(), whole.Name()));
    }
  }
  // A super weight named twice would be zeroed (or scaled) twice.
  std::vector<std::tuple<int, int, int64_t, int64_t>> keys;
  keys.reserve(super_weights.size());
  for (const SuperWeightCoordinate& sw : super_weights) {
    keys.emplace_back(sw.layer, sw.expert, sw.row, sw.col);
  }
  std::sort(keys.begin(), keys.end());
  if (auto d = std::adjacent_find(keys.begin(), keys.end()); d != keys.end()) {
    const auto& [layer, expert, row, col] = *d;
    return absl::InvalidArgumentError(
        absl::StrFormat("super weight %s is given more than once",
                        SuperWeightCoordinate{layer, row, col, expert}.Name()));
  }
  return absl::OkStatus();
}

std::string AblationSetting::ModelKey() const {
  if (kind == AblationKind::kScaleSuperWeights && scale == 1.f) return "intact";
  if (kind == AblationKind::kScaleSuperWeights && scale == 0.f) return "prune SW";
  return Name();
}

std::string AblationSetting::Name() const {
  switch (kind) {
    case AblationKind::kIntact:
      return "intact";
    case AblationKind::kPruneSuperWeights:
      return "prune SW";
    case AblationKind::kScaleSuperWeights:
      return absl::StrFormat("scale SW x%g", scale);
    case AblationKind::kPruneOutliers:
      return "prune outliers, SW kept";
    case AblationKind::kPruneOutliersAndSuperWeights:
      return "prune outliers and SW";
    case AblationKind::kPruneExpert:
      return absl::StrFormat("prune expert %d:%d", expert.layer, expert.expert);
    case AblationKind::kRestoreSuperActivation:
      break;
  }
  return "prune SW, restore SA";
}

absl::StatusOr<std::vector<AblationSetting>> AblationSettings(
    const std::vector<std::string>& names, const std::vector<float>& scales,
    const std::vector<ExpertId>& experts) {
  std::vector<AblationSetting> settings = {{AblationKind::kIntact}};
  for (const std::string& name : names) {
    if (name == "intact") continue;  // always first
    if (name == "prune") {
      settings.push_back({AblationKind::kPruneSuperWeights});
    } else if (name == "scale") {
      for (float s : scales) {
        if (!std::isfinite(s)) return absl::InvalidArgumentError("scales must be finite");
        settings.push_back({AblationKind::kScaleSuperWeights, s});
      }
    } else if (name == "outliers") {
      settings.push_back({AblationKind::kPruneOutliers});
      settings.push_back({AblationKind::kPruneOutliersAndSuperWeights});
    } else if (name == "restore_sa") {
      settings.push_back({AblationKind::kRestoreSuperActivation});
    } else if (name == "prune_experts") {
      if (experts.empty()) {
        return absl::InvalidArgumentError("prune_experts names no experts (LAYER:EXPERT)");
      }
      for (const ExpertId& e : experts) {
        AblationSetting setting{AblationKind::kPruneExpert};
        setting.expert = e;
        settings.push_back(setting);
      }
    } else if (name != "token_probs") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown ablation setting '", Utf8Prefix(name, 64),
          "'; expected prune, scale, outliers, restore_sa, prune_experts or token_probs"));
    }
  }
  return settings;
}

absl::StatusOr<std::vector<WeightEdit>> OutlierEdits(const Model& model, double fraction,
                                                     const std::vector<SuperWeightCoordinate>& keep,
                                                     const std::atomic<bool>* cancelled) {
  if (!(fraction > 0 && fraction <= kMaxOutlierFraction)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("outlier_fraction must be in (0, %g]", kMaxOutlierFraction));
  }
  if (absl::Status s = CheckSuperWeights(model, keep); !s.ok()) return s;
  // Every linear weight of the layers: their own, and each expert's.
  struct Tensor {
    int layer, expert;
    LinearKind kind;
    const Matrix* w;
  };
  std::vector<Tensor> all;
  for (int layer = 0; layer < model.config.layers; ++layer) {
    const LayerWeights& lw = model.layers[layer];
    for (int expert = -1; expert < static_cast<int>(lw.experts.size()); ++expert) {
      for (LinearKind kind : kLinearKinds) {
        if (const Matrix* w = lw.Find(kind, expert)) all.push_back({layer, expert, kind, w});
      }
    }
  }
  const int tensors = static_cast<int>(all.size());
  std::vector<std::vector<WeightEdit>> found(tensors);
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < tensors; ++t) {
    if (cancelled != nullptr && cancelled->load(std::memory_order_relaxed)) continue;
    const int layer = all[t].layer, expert = all[t].expert;
    const LinearKind kind = all[t].kind;
    const Matrix& w = *all[t].w;
    const int64_t count = std::max<int64_t>(
        1, std::llround(fraction * static_cast<double>(w.rows) * static_cast<double>(w.cols)));
    // The `count` largest |w| so far, smallest on top.
    using Entry = std::tuple<float, int64_t, int64_t>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> top;
    std::vector<float> row(w.cols);
    for (int64_t r = 0; r < w.rows; ++r) {
      DequantizeRow(w.dtype, w.Row(r), w.cols, row.data());
      for (int64_t c = 0; c < w.cols; ++c) {
        const float magnitude = std::fabs(row[c]);
        if (static_cast<int64_t>(top.size()) == count && magnitude <= std::get<0>(top.top())) {
          continue;
        }
        bool is_super = false;
        for (const SuperWeightCoordinate& sw : keep) {
          is_super |= kind == LinearKind::kDown && sw.layer == layer && sw.expert == expert &&
                      sw.row == r && sw.col == c;
        }
        if (is_super) continue;
        top.emplace(magnitude, r, c);
        if (static_cast<int64_t>(top.size()) > count) top.pop();
      }
    }
    for (; !top.empty(); top.pop()) {
      found[t].push_back(
          {layer, kind, std::get<1>(top.top()), std::get<2>(top.top()), 0.f, expert});
    }
  }
  if (cancelled != nullptr && cancelled->load()) return absl::CancelledError("cancelled");
  std::vector<WeightEdit> edits;
  for (const auto& f : found) edits.insert(edits.end(), f.begin(), f.end());
  return edits;
}

absl::StatusOr<BatchEdits> AblationEdits(const Model& model, const AblationSetting& setting,
                                         const std::vector<SuperWeightCoordinate>& super_weights,
                                         const std::vector<WeightEdit>& outliers,
                                         Precision precision) {
  if (absl::Status s = CheckSuperWeights(model, super_weights); !s.ok()) return s;
  EditSet fixed;
  switch (setting.kind) {
    case AblationKind::kIntact:
      return BatchEdits();
    case AblationKind::kPruneSuperWeights:
    case AblationKind::kRestoreSuperActivation:
      fixed.weights = SuperWeightEdits(model, super_weights, 0.f);
      break;
    case AblationKind::kScaleSuperWeights:
      fixed.weights = SuperWeightEdits(model, super_weights, setting.scale);
      break;
    case AblationKind::kPruneOutliers:
      fixed.weights = outliers;
      break;
    case AblationKind::kPruneOutliersAndSuperWeights:
      fixed.weights = outliers;
      for (const WeightEdit& e : SuperWeightEdits(model, super_weights, 0.f)) {
        fixed.weights.push_back(e);
      }
      break;
    case AblationKind::kPruneExpert:
      fixed.pruned_experts.push_back(setting.expert);
      break;
  }
  if (absl::Status s = fixed.Validate(model); !s.ok()) return s;
  if (setting.kind != AblationKind::kRestoreSuperActivation) {
    return SameEditsEverySequence(fixed);
  }
  // The super weights' layers, each watched once on the intact pass, lowest first: the pass
  // only moves forward, and below them it is the one the other settings share.
  std::vector<int> watched_layers;
  for (const SuperWeightCoordinate& sw : super_weights) watched_layers.push_back(sw.layer);
  std::sort(watched_layers.begin(), watched_layers.end());
  watched_layers.erase(std::unique(watched_layers.begin(), watched_layers.end()),
                       watched_layers.end());
  return BatchEdits([&model, fixed, super_weights, watched_layers, precision](
                        absl::Span<const std::vector<int32_t>> sequences,
                        IntactPass* intact) -> absl::StatusOr<std::vector<EditSet>> {
    std::vector<SequenceInput> batch;
    for (const auto& s : sequences) batch.push_back({s, nullptr});
    std::optional<IntactPass> own;  // called without the harness's
    if (intact == nullptr) intact = &own.emplace(model, batch, ForwardOptions{precision});
    SuperActivationTap tap(super_weights, static_cast<int>(sequences.size()));
    for (int layer : watched_layers) {
      if (absl::Status s = intact->Watch(layer, &tap); !s.ok()) return s;
    }
    std::vector<EditSet> edits(sequences.size(), fixed);
    for (size_t s = 0; s < sequences.size(); ++s) {
      for (size_t i = 0; i < super_weights.size(); ++i) {
        const auto [token, value] = tap.found(static_cast<int>(s))[i];
        if (token < 0) continue;
        edits[s].activations.push_back({super_weights[i].layer, token,
                                        static_cast<int>(super_weights[i].row), value,
                                        super_weights[i].expert});
      }
    }
    return edits;
  });
}

const std::vector<std::string>& StopwordTokens() {
  static const std::vector<std::string> words = {"the", ".",  ",",  "and", "of", "to",
                                                 "a",   "in", "\"", "was", "he", "that"};
  return words;
}

absl::StatusOr<AblateResult> Ablate(const Model& model, const AblateOptions& options) {
  if (absl::Status s = CheckSuperWeights(model, options.super_weights); !s.ok()) return s;
  const bool outliers_needed =
      std::any_of(options.settings.begin(), options.settings.end(), [](const AblationSetting& s) {
        return s.kind == AblationKind::kPruneOutliers ||
               s.kind == AblationKind::kPruneOutliersAndSuperWeights;
      });
  std::vector<WeightEdit> outliers;
  if (outliers_needed) {
    absl::StatusOr<std::vector<WeightEdit>> found = OutlierEdits(
        model, options.outlier_fraction, options.super_weights, options.harness.cancelled);
    if (!found.ok()) return found.status();
    outliers = std::move(*found);
  }
  const int token_steps = options.token_probability_contexts.empty() ? 0 : 2;

  // Each distinct model once (scale x1 is the intact model), every one in one EvaluateSettings
  // call: batch after batch the intact pass runs once up to the first layer a setting edits,
  // every setting continues from it, and restore SA's watch of the super activation reads that
  // same pass. Each setting's numbers are what it gets alone, bit for bit.
  std::map<std::string, size_t> evaluated;  // ModelKey -> its edits' index
  std::vector<BatchEdits> edits;
  for (const AblationSetting& setting : options.settings) {
    if (evaluated.count(setting.ModelKey()) > 0) continue;
    absl::StatusOr<BatchEdits> e =
        AblationEdits(model, setting, options.super_weights, outliers, options.harness.precision);
    if (!e.ok()) return e.status();
    evaluated[setting.ModelKey()] = edits.size();
    edits.push_back(*std::move(e));
  }
  StepProgress progress(options.harness,
                        static_cast<int>(edits.size()) * options.plan.steps() + token_steps,
                        options.on_progress);
  absl::StatusOr<std::vector<Evaluation>> evaluations = EvaluateSettings(
      model, options.plan, edits, absl::StrCat(edits.size(), " settings"), &progress);
  if (!evaluations.ok()) return evaluations.status();

  AblateResult result;
  for (const AblationSetting& setting : options.settings) {
    const Evaluation& evaluation = (*evaluations)[evaluated[setting.ModelKey()]];
    AblationRow row;
    row.setting = setting;
    if (setting.kind == AblationKind::kPruneOutliers ||
        setting.kind == AblationKind::kPruneOutliersAndSuperWeights) {
      row.outliers_pruned = static_cast<int64_t>(outliers.size());
    }
    row.tasks = evaluation.tasks;
    row.wikitext2_perplexity = evaluation.wikitext2_perplexity;
    row.average_acc = evaluation.average_acc;
    result.rows.push_back(std::move(row));
  }

  if (!options.token_probability_contexts.empty()) {
    if (model.tokenizer == nullptr) {
      return absl::FailedPreconditionError("token probabilities need the model's tokenizer");
    }
    std::vector<int32_t> ids;
    for (const std::string& word : StopwordTokens()) {
      // As it follows a word: " the" in byte-level BPE (SentencePiece's "▁the" comes from
      // "the"), "." with no space.
      const bool punctuation = !std::isalpha(static_cast<unsigned char>(word[0]));
      for (const std::string& spelling : punctuation ? std::vector<std::string>{word}
                                                     : std::vector<std::string>{" " + word, word}) {
        const std::vector<int32_t> encoded = model.tokenizer->Encode(spelling, /*add_bos=*/false);
        if (encoded.size() != 1) continue;
        result.token_probabilities.push_back({word, encoded[0]});
        ids.push_back(encoded[0]);
        break;
      }
    }
    absl::StatusOr<BatchEdits> pruned =
        AblationEdits(model, {AblationKind::kPruneSuperWeights}, options.super_weights, {},
                      options.harness.precision);
    if (!pruned.ok()) return pruned.status();
    const BatchEdits both[2] = {BatchEdits(), *std::move(pruned)};
    absl::StatusOr<std::vector<std::vector<std::vector<double>>>> p =
        NextTokenProbabilitiesPerSetting(
            model, options.token_probability_contexts, ids,
            progress.Next("token probabilities, intact and prune SW", 2), both);
    if (!p.ok()) return p.status();
    for (size_t w = 0; w < ids.size(); ++w) {
      for (int pass = 0; pass < 2; ++pass) {
        double mean = 0;
        for (const auto& context : (*p)[pass]) mean += context[w];
        mean /= static_cast<double>((*p)[pass].size());
        (pass == 0 ? result.token_probabilities[w].intact : result.token_probabilities[w].pruned) =
            mean;
      }
    }
  }
  progress.Done();
  return result;
}

}  // namespace superweight
