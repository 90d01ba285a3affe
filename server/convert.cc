#include "server/convert.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace superweight::server {

Precision FromProto(v1::Precision p) {
  return p == v1::PRECISION_BF16 ? Precision::kBF16 : Precision::kF32;
}

SuperWeightCoordinate FromProto(const v1::Coordinate& c) {
  return {c.layer(), c.row(), c.col(), c.has_expert() ? c.expert() : -1};
}

void ToProto(const SuperWeightCoordinate& c, v1::Coordinate* out) {
  out->set_layer(c.layer);
  out->set_row(c.row);
  out->set_col(c.col);
  if (c.expert >= 0) out->set_expert(c.expert);
}

absl::StatusOr<EditSet> FromProto(const v1::EditSet& edits, const Model& model) {
  EditSet out;
  for (const auto& w : edits.weights()) {
    const SuperWeightCoordinate c = FromProto(w.coordinate());
    if (w.coordinate().has_expert() && c.expert < 0) {
      return absl::InvalidArgumentError(absl::StrFormat("expert %d is negative", c.expert));
    }
    out.weights.push_back({c.layer, LinearKind::kDown, c.row, c.col, w.value(), c.expert});
  }
  for (const auto& a : edits.activations()) {
    out.activations.push_back({a.layer(), a.token(), a.channel(), a.value()});
  }
  if (auto s = out.Validate(model); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<int32_t>> TokensFromInput(const v1::Input& input, const Model& model,
                                                     int max_tokens,
                                                     const std::string& fallback_text) {
  std::vector<int32_t> ids;
  if (input.has_token_ids()) {
    ids.assign(input.token_ids().ids().begin(), input.token_ids().ids().end());
    for (int32_t id : ids) {
      if (id < 0 || id >= model.config.vocab) {
        return absl::InvalidArgumentError(
            absl::StrFormat("token id %d out of range [0, %d)", id, model.config.vocab));
      }
    }
  } else {
    const std::string& text = input.kind_case() == v1::Input::kText ? input.text() : fallback_text;
    if (text.empty()) return absl::InvalidArgumentError("empty input: give text or token ids");
    if (model.tokenizer == nullptr) {
      return absl::FailedPreconditionError("the model has no tokenizer: give token ids");
    }
    EncodeOptions encode;
    encode.add_bos = model.config.add_bos;
    encode.max_tokens = static_cast<size_t>(max_tokens);  // refused before the work it bounds
    auto tokenized = model.tokenizer->Tokenize(text, encode);
    if (!tokenized.ok()) return tokenized.status();
    ids = std::move(*tokenized);
  }
  if (ids.empty()) return absl::InvalidArgumentError("empty input: no tokens");
  if (static_cast<int>(ids.size()) > max_tokens) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%d tokens are over the server's limit of %d per request", ids.size(), max_tokens));
  }
  return ids;
}

namespace {

void LayerProfile(const std::vector<LayerMax>& layers,
                  google::protobuf::RepeatedPtrField<v1::LayerActivation>* out) {
  for (size_t l = 0; l < layers.size(); ++l) {
    v1::LayerActivation* a = out->Add();
    a->set_layer(static_cast<int>(l));
    a->set_input_max_abs(layers[l].input_max_abs);
    a->set_output_max_abs(layers[l].output_max_abs);
    a->set_output_token(layers[l].output_token);
    a->set_output_channel(layers[l].output_channel);
    if (layers[l].output_expert >= 0) a->set_output_expert(layers[l].output_expert);
  }
}

void ExpertActivations(const std::vector<ExpertMax>& maxima,
                       google::protobuf::RepeatedPtrField<v1::ExpertActivation>* out) {
  for (const ExpertMax& m : maxima) {
    v1::ExpertActivation* a = out->Add();
    a->set_layer(m.layer);
    a->set_expert(m.expert);
    a->set_output_max_abs(m.output_max_abs);
  }
}

// A row's harness metrics: TASK/acc, TASK/acc_norm, TASK/perplexity, wikitext2/perplexity,
// average/acc, and the examples per task.
void EvaluationMetrics(const std::vector<TaskScore>& tasks, double wikitext2_perplexity,
                       double average_acc, google::protobuf::Map<std::string, double>* metrics,
                       google::protobuf::Map<std::string, int32_t>* examples) {
  if (wikitext2_perplexity >= 0) (*metrics)["wikitext2/perplexity"] = wikitext2_perplexity;
  for (const TaskScore& t : tasks) {
    (*metrics)[t.task + "/acc"] = t.acc;
    if (!std::isnan(t.acc_norm)) (*metrics)[t.task + "/acc_norm"] = t.acc_norm;
    if (!std::isnan(t.perplexity)) (*metrics)[t.task + "/perplexity"] = t.perplexity;
    (*examples)[t.task] = t.examples;
  }
  if (average_acc >= 0) (*metrics)["average/acc"] = average_acc;
}

}  // namespace

absl::StatusOr<QuantizeSetting> FromProto(const v1::QuantizeSetting& s) {
  QuantizeSetting setting;
  setting.activation_bits = s.activation_bits();
  setting.hold_out_super_activations = s.hold_out_super_activations();
  setting.hold_out_largest_activations = s.hold_out_largest_activations();
  if (s.full_precision()) {
    setting.full_precision = true;
  } else {
    setting.spec.bits = s.bits();
    setting.spec.block_size = s.block_size();
    auto clip = ParseClipMethod(s.clip().empty() ? "none" : s.clip());
    if (!clip.ok()) return clip.status();
    setting.spec.clip = *clip;
    setting.spec.clip_value = s.clip_value() == 0 ? DefaultClipValue(*clip) : s.clip_value();
    setting.restore_super_weights = s.restore_super_weights();
    setting.keep_super_experts = s.keep_super_experts();
  }
  if (absl::Status st = setting.Validate(); !st.ok()) return st;
  return setting;
}

v1::QuantizeSetting ToProto(const QuantizeSetting& s) {
  v1::QuantizeSetting p;
  p.set_activation_bits(s.activation_bits);
  p.set_hold_out_super_activations(s.hold_out_super_activations);
  p.set_hold_out_largest_activations(s.hold_out_largest_activations);
  if (s.full_precision) {
    p.set_full_precision(true);
    return p;
  }
  p.set_bits(s.spec.bits);
  p.set_block_size(s.spec.block_size);
  p.set_clip(ClipMethodName(s.spec.clip));
  p.set_clip_value(s.spec.clip_value);
  p.set_restore_super_weights(s.restore_super_weights);
  p.set_keep_super_experts(s.keep_super_experts);
  return p;
}

v1::QuantizeResult ToProto(const std::vector<QuantizeTableRow>& rows) {
  v1::QuantizeResult out;
  for (const QuantizeTableRow& row : rows) {
    v1::QuantizeResult::Row* p = out.add_rows();
    p->set_setting(row.name.empty() ? row.setting.Name() : row.name);
    *p->mutable_spec() = ToProto(row.setting);
    const Evaluation& e = row.evaluation;
    EvaluationMetrics(e.tasks, e.wikitext2_perplexity, e.average_acc, p->mutable_metrics(),
                      p->mutable_examples());
    if (row.weight_mse >= 0) (*p->mutable_metrics())["weights/mse"] = row.weight_mse;
    double worst = 0;
    for (double err : row.super_weight_relative_error) {
      p->add_super_weight_relative_error(err);
      worst = std::max(worst, err);
    }
    if (!row.super_weight_relative_error.empty()) {
      (*p->mutable_metrics())["super_weights/max_rel_error"] = worst;
    }
  }
  return out;
}

v1::AblateResult ToProto(const AblateResult& r) {
  v1::AblateResult out;
  for (const AblationRow& row : r.rows) {
    v1::AblateResult::Row* p = out.add_rows();
    p->set_setting(row.setting.Name());
    EvaluationMetrics(row.tasks, row.wikitext2_perplexity, row.average_acc, p->mutable_metrics(),
                      p->mutable_examples());
    p->set_outliers_pruned(row.outliers_pruned);
  }
  for (const TokenProbability& t : r.token_probabilities) {
    v1::AblateResult::TokenProbability* p = out.add_token_probabilities();
    p->set_token(t.token);
    p->set_id(t.id);
    p->set_intact(t.intact);
    p->set_pruned(t.pruned);
  }
  return out;
}

std::string LocateSummary(const LocateResult& r) {
  const int confirmed = r.ConfirmedCount();
  // perplexity_intact is 0 when no confirmation ran (skipped, or no text to measure with).
  std::string summary;
  if (r.candidates.empty()) {
    summary = "no layer spikes: no super weight";
  } else if (r.perplexity_intact <= 0) {
    summary = absl::StrFormat(
        "%d candidate%s, not confirmed: confirmation skipped, so none counts as a super weight",
        r.candidates.size(), r.candidates.size() == 1 ? "" : "s");
  } else if (confirmed == 0) {
    summary = "spikes found, but zeroing none of them hurts: no confirmed super weight";
  } else {
    summary = absl::StrFormat("%d super weight%s", confirmed, confirmed == 1 ? "" : "s");
  }
  for (const auto& s : r.candidates) {
    if (!s.confirmed) continue;
    summary += absl::StrFormat(
        "; %s = %.4g", SuperWeightCoordinate{s.layer, s.row, s.col, s.expert}.Name(), s.weight);
    if (r.perplexity_intact > 0) {
      summary += absl::StrFormat(" (zeroed: perplexity %.4g -> %.4g)", r.perplexity_intact,
                                 s.perplexity_zeroed);
    }
  }
  return summary;
}

v1::LocateResult ToProto(const LocateResult& r) {
  v1::LocateResult out;
  for (const SuperWeight& s : r.candidates) {
    v1::SuperWeight* p = out.add_super_weights();
    ToProto(SuperWeightCoordinate{s.layer, s.row, s.col, s.expert}, p->mutable_coordinate());
    p->set_weight(s.weight);
    p->set_input_activation(s.input_activation);
    p->set_output_activation(s.output_activation);
    p->set_token(s.token);
    p->set_iteration(s.iteration);
    p->set_confirmed(s.confirmed);
    p->set_perplexity_zeroed(s.perplexity_zeroed);
  }
  LayerProfile(r.profile_before, out.mutable_profile_before());
  LayerProfile(r.profile_after, out.mutable_profile_after());
  out.set_iterations(r.iterations);
  out.set_perplexity_intact(r.perplexity_intact);
  ExpertActivations(r.expert_maxima, out.mutable_expert_maxima());
  ExpertActivations(r.super_experts, out.mutable_super_experts());
  return out;
}

v1::ModelInfo ToProto(const ModelSummary& m, const std::string& name) {
  v1::ModelInfo info;
  info.set_name(name);
  info.set_display_name(m.display_name);
  info.set_format(m.format);
  info.set_architecture(m.architecture);
  info.set_layers(m.layers);
  info.set_hidden_size(m.hidden);
  info.set_intermediate_size(m.intermediate);
  info.set_vocab_size(m.vocab);
  info.set_weight_dtype(m.weight_dtype);
  info.set_loaded(m.loaded);
  info.set_mapped_bytes(m.mapped_bytes);
  info.set_experts(m.experts);
  info.set_experts_per_token(m.experts_per_token);
  return info;
}

}  // namespace superweight::server
