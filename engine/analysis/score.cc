#include "engine/analysis/score.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/runtime/aligned_vector.h"
#include "engine/runtime/fast_math.h"
#include "engine/runtime/flush_subnormals.h"

namespace superweight {

absl::StatusOr<std::vector<std::vector<float>>> TokenLogprobs(const Model& model,
                                                              absl::Span<const SequenceInput> batch,
                                                              Precision precision,
                                                              const std::atomic<bool>* cancelled) {
  ForwardOptions options;
  options.precision = precision;
  options.cancelled = cancelled;
  auto out = RunForward(model, batch, options);
  if (!out.ok()) return out.status();
  return TokenLogprobs(model, batch, *out, precision);
}

absl::StatusOr<std::vector<std::vector<float>>> TokenLogprobs(const Model& model,
                                                              absl::Span<const SequenceInput> batch,
                                                              const ForwardOutput& forward,
                                                              Precision precision) {
  const ForwardOutput* out = &forward;
  if (out->offsets.size() != batch.size() + 1) {
    return absl::InvalidArgumentError("the forward output is not the batch's");
  }
  const int64_t V = model.config.vocab, N = out->offsets.back();
  const ScopedFlushSubnormals flush;
  LinearScratch scratch;
  std::vector<int32_t> next(N, -1);  // the token each row predicts; -1 for a sequence's last row
  for (size_t s = 0; s < batch.size(); ++s) {
    for (int64_t p = 0; p + 1 < static_cast<int64_t>(batch[s].tokens.size()); ++p) {
      next[out->offsets[s] + p] = batch[s].tokens[p + 1];
    }
  }
  std::vector<float> shift(N, -INFINITY), target(N, 0.f);  // row_sum is relative to shift
  std::vector<double> row_sum(N, 0.0);
  LinearInputStorage hidden_storage;
  const LinearInput hidden(out->hidden.data(), N, model.config.hidden, precision, &hidden_storage);
  // A sequence's last row has no next token and is carried along unused. Where the packed kernel
  // serves (AVX-512 up) the log-sum-exp is taken in the matmul's epilogue, from the products still
  // in L1: the logits never reach memory (SmolLM2 bf16 pass 1.06x, quartiles 1.00-1.11 over 30
  // pairs). (Soft-capped logits are not the matmul's: they take the slices below.)
  const bool fused = model.config.final_softcap <= 0 &&
                     LinearLogSumExp(model.lm_head, hidden, next.data(), shift.data(),
                                     row_sum.data(), target.data());
  // Elsewhere the lm_head a slice of the vocabulary at a time, over the rows of every sequence at
  // once, with an online log-sum-exp per row: each slice of (possibly quantized) weights is
  // converted once per batch, and the logits held at once are [rows, slice]: about 2 MiB, still
  // in cache for the log-sum-exp (more past 2048 rows, where a slice stays 256 wide), never
  // [rows, vocab]. The hidden states are rounded to bf16 once for all slices.
  const int64_t slice = std::clamp<int64_t>((int64_t{1} << 19) / N, 256, 4096);
  internal::HugePageVector<float> logits(fused ? 0 : N * std::min(V, slice));  // a matmul output
  for (int64_t v0 = 0; v0 < V && !fused; v0 += slice) {
    const int64_t n = std::min(slice, V - v0);
    const absl::Status status =
        Linear(model.lm_head.RowSlice(v0, n), hidden, logits.data(), n, &scratch);
    if (!status.ok()) return status;
    SoftcapLogits(model.config, logits.data(), N * n);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      if (next[r] < 0) continue;
      const float* lr = &logits[r * n];
      const float mx = std::max(shift[r], MaxOf(lr, n));
      float slice_sum = 0;
#pragma omp simd reduction(+ : slice_sum)
      for (int64_t i = 0; i < n; ++i) slice_sum += FastExp(lr[i] - mx);
      row_sum[r] = row_sum[r] * std::exp(static_cast<double>(shift[r] - mx)) + slice_sum;
      shift[r] = mx;
      if (next[r] >= v0 && next[r] < v0 + n) target[r] = lr[next[r] - v0];
    }
  }
  std::vector<std::vector<float>> result(batch.size());
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t first = out->offsets[s], rows = out->offsets[s + 1] - first - 1;
    result[s].resize(rows);
    for (int64_t p = 0; p < rows; ++p) {
      const int64_t r = first + p;
      result[s][p] = static_cast<float>(target[r] - shift[r] - std::log(row_sum[r]));
    }
  }
  return result;
}

absl::StatusOr<std::vector<EditSet>> EditsOfBatch(const BatchEdits& edits,
                                                  absl::Span<const std::vector<int32_t>> sequences,
                                                  IntactPass* intact) {
  if (!edits) return std::vector<EditSet>(sequences.size());
  absl::StatusOr<std::vector<EditSet>> own = edits(sequences, intact);
  if (own.ok() && own->size() != sequences.size()) {
    return absl::InternalError("an edit hook returned the wrong number of edit sets");
  }
  return own;
}

std::vector<size_t> SharingOrder(const Model& model,
                                 absl::Span<const std::vector<EditSet>> setting_edits) {
  std::vector<int> first(setting_edits.size(), model.config.layers);
  for (size_t s = 0; s < setting_edits.size(); ++s) {
    for (const EditSet& e : setting_edits[s]) first[s] = e.FirstLayer(first[s]);
  }
  std::vector<size_t> order(setting_edits.size());
  for (size_t s = 0; s < order.size(); ++s) order[s] = s;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return first[a] < first[b]; });
  return order;
}

SettingPasses::SettingPasses(const Model& model, absl::Span<const SequenceInput> batch,
                             absl::Span<const std::vector<EditSet>> setting_edits,
                             IntactPass* intact, const ForwardOptions& options)
    : model_(model),
      batch_(batch.begin(), batch.end()),
      setting_edits_(setting_edits),
      intact_(intact),
      options_(options),
      order_(SharingOrder(model, setting_edits)) {
  const int layers = model.config.layers;
  const size_t n = order_.size();
  start_.assign(n, layers);
  source_.assign(n, -1);
  saves_.resize(n);
  kept_.resize(n);
  readers_.assign(n, 0);
  for (size_t k = 0; k < n; ++k) {
    const std::vector<EditSet>& own = setting_edits[order_[k]];
    for (const EditSet& e : own) start_[k] = e.FirstLayer(start_[k]);
    for (size_t j = 0; j < k; ++j) {
      // Where settings j and k part: the lowest layer any sequence's edits differ at.
      int common = layers;
      const std::vector<EditSet>& other = setting_edits[order_[j]];
      for (size_t s = 0; s < own.size() && common > start_[k]; ++s) {
        common = std::min(common, own[s].FirstLayerDifferentFrom(other[s], layers));
      }
      // j's pass must reach that layer from where it starts, and go further than k alone.
      if (common >= start_[j] && common > start_[k]) {
        start_[k] = common;
        source_[k] = static_cast<int>(j);
      }
    }
    if (source_[k] >= 0) {
      std::vector<int>& saves = saves_[source_[k]];
      if (std::find(saves.begin(), saves.end(), start_[k]) == saves.end()) {
        saves.push_back(start_[k]);
      }
      ++readers_[source_[k]];
    }
  }
  for (std::vector<int>& saves : saves_) std::sort(saves.begin(), saves.end());
}

absl::StatusOr<ForwardOutput> SettingPasses::Run(size_t k) {
  const std::vector<EditSet>& own = setting_edits_[order_[k]];
  std::vector<SequenceInput> batch = batch_;
  for (size_t i = 0; i < batch.size(); ++i) batch[i].edits = own[i].empty() ? nullptr : &own[i];
  if (source_[k] < 0 && saves_[k].empty()) return intact_->RunEdited(batch);
  absl::StatusOr<ResidualStream> stream;
  if (source_[k] < 0) {
    stream = intact_->Before(start_[k]);
  } else {
    const size_t j = static_cast<size_t>(source_[k]);
    for (const auto& [layer, kept] : kept_[j]) {
      if (layer == start_[k]) stream = kept;
    }
    if (--readers_[j] == 0) kept_[j].clear();
    if (!stream.ok() || stream->layer != start_[k]) {
      return absl::InternalError("a shared stream was not kept");
    }
  }
  if (!stream.ok()) return stream.status();
  for (int layer : saves_[k]) {
    if (absl::Status s = RunLayers(model_, batch, layer, options_, &*stream); !s.ok()) return s;
    kept_[k].push_back({layer, *stream});
  }
  if (absl::Status s = RunLayers(model_, batch, model_.config.layers, options_, &*stream);
      !s.ok()) {
    return s;
  }
  return FinishForward(model_, *stream);
}

BatchEdits SameEditsEverySequence(EditSet edits) {
  return [fixed = std::move(edits)](absl::Span<const std::vector<int32_t>> sequences, IntactPass*) {
    return absl::StatusOr<std::vector<EditSet>>(std::vector<EditSet>(sequences.size(), fixed));
  };
}

absl::StatusOr<PerplexityResult> Perplexity(const Model& model, absl::Span<const int32_t> tokens,
                                            const PerplexityOptions& options) {
  BatchEdits edits = options.batch_edits;
  if (!edits && options.edits != nullptr) edits = SameEditsEverySequence(*options.edits);
  absl::StatusOr<std::vector<PerplexityResult>> r =
      PerplexityPerSetting(model, tokens, options, {&edits, 1});
  if (!r.ok()) return r.status();
  return r->front();
}

absl::StatusOr<std::vector<PerplexityResult>> PerplexityPerSetting(
    const Model& model, absl::Span<const int32_t> tokens, const PerplexityOptions& options,
    absl::Span<const BatchEdits> settings) {
  if (options.window < 2) return absl::InvalidArgumentError("window must be at least 2 tokens");
  int64_t windows = static_cast<int64_t>(tokens.size()) / options.window;
  if (options.max_windows > 0) windows = std::min<int64_t>(windows, options.max_windows);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text has %d tokens, fewer than one %d-token window", tokens.size(), options.window));
  }
  const int64_t S = static_cast<int64_t>(settings.size());
  std::vector<double> nll(S, 0.0);
  std::vector<int64_t> count(S, 0);
  ForwardOptions fo;
  fo.precision = options.precision;
  fo.cancelled = options.cancelled;
  const int per_pass = std::max(1, options.batch_windows);
  for (int64_t w0 = 0; w0 < windows; w0 += per_pass) {
    const int64_t w1 = std::min(windows, w0 + per_pass);
    std::vector<std::vector<int32_t>> sequences;
    std::vector<SequenceInput> intact_batch;
    for (int64_t w = w0; w < w1; ++w) {
      sequences.emplace_back(tokens.begin() + w * options.window,
                             tokens.begin() + (w + 1) * options.window);
      intact_batch.push_back({tokens.subspan(w * options.window, options.window), nullptr});
    }
    IntactPass intact(model, intact_batch, fo);
    std::vector<std::vector<EditSet>> setting_edits;
    for (const BatchEdits& edits : settings) {
      absl::StatusOr<std::vector<EditSet>> own = EditsOfBatch(edits, sequences, &intact);
      if (!own.ok()) return own.status();
      setting_edits.push_back(std::move(*own));
    }
    SettingPasses passes(model, intact_batch, setting_edits, &intact, fo);
    const std::vector<size_t>& order = passes.order();
    for (size_t k = 0; k < order.size(); ++k) {
      const size_t s = order[k];
      absl::StatusOr<ForwardOutput> out = passes.Run(k);
      if (!out.ok()) return out.status();
      auto lp = TokenLogprobs(model, intact_batch, *out, options.precision);
      if (!lp.ok()) return lp.status();
      for (const auto& seq : *lp) {
        for (float v : seq) nll[s] -= v;
        count[s] += seq.size();
      }
      if (options.on_progress) {
        options.on_progress(static_cast<double>(w0 * S + (w1 - w0) * static_cast<int64_t>(k + 1)) /
                            static_cast<double>(windows * S));
      }
    }
  }
  std::vector<PerplexityResult> results(S);
  for (int64_t s = 0; s < S; ++s) {
    PerplexityResult& r = results[s];
    r.mean_nll = nll[s] / count[s];
    r.perplexity = std::exp(r.mean_nll);
    r.tokens_scored = count[s];
    r.windows = static_cast<int>(windows);
  }
  return results;
}

}  // namespace superweight
