#include "engine/analysis/imatrix.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/formats/gguf_writer.h"
#include "engine/model/tensor_names.h"
#include "engine/runtime/forward.h"

namespace superweight {
namespace {

// The weights that read each linear input site, by role (those the architecture has).
std::vector<TensorRole> RolesOfSite(LinearInputSite site) {
  switch (site) {
    case LinearInputSite::kQkv:
      return {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnQkv};
    case LinearInputSite::kO:
      return {TensorRole::kAttnOutput};
    case LinearInputSite::kGateUp:
      return {TensorRole::kFfnGate, TensorRole::kFfnUp, TensorRole::kFfnGateUp};
    case LinearInputSite::kDown:
      return {TensorRole::kFfnDown};
  }
  return {};
}

// Sums each site's squared activations per column as the pass goes (the forward pass calls
// the transform once per sequence and site, on one thread), leaving the values as they are.
class SquaredActivationSums : public ActivationTransform {
 public:
  explicit SquaredActivationSums(int layers) : sums_(layers) {}

  void Apply(int layer, LinearInputSite site, int64_t tokens, int64_t cols,
             float* x) const override {
    Site& s = sums_[layer][static_cast<int>(site)];
    if (s.sum.empty()) s.sum.assign(cols, 0.0);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* row = x + t * cols;
      for (int64_t j = 0; j < cols; ++j) s.sum[j] += double{row[j]} * row[j];
    }
    s.count += tokens;
  }

  struct Site {
    std::vector<double> sum;
    int64_t count = 0;
  };
  const Site& at(int layer, LinearInputSite site) const {
    return sums_[layer][static_cast<int>(site)];
  }

 private:
  mutable std::vector<std::array<Site, kNumLinearInputSites>> sums_;
};

}  // namespace

ImatrixEntry* Imatrix::Find(const std::string& name) {
  for (ImatrixEntry& e : entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

const ImatrixEntry* Imatrix::Find(const std::string& name) const {
  return const_cast<Imatrix*>(this)->Find(name);
}

absl::StatusOr<Imatrix> ComputeImatrix(const Model& model, absl::Span<const int32_t> tokens,
                                       const ImatrixOptions& options) {
  const ModelConfig& c = model.config;
  for (TensorRole role : {TensorRole::kAttnQ, TensorRole::kFfnDown}) {
    if (FindRole(c.arch, role) == nullptr || FindRole(c.arch, role)->gguf == nullptr) {
      return absl::UnimplementedError("the architecture's tensors have no GGUF names");
    }
  }
  if (c.experts > 0) {
    return absl::UnimplementedError(
        "an importance matrix of a mixture-of-experts model (per-expert inputs) is not built");
  }
  if (options.chunk < 1 || options.batch_chunks < 1 || options.max_chunks < 0) {
    return absl::InvalidArgumentError("chunk and batch_chunks must be positive");
  }
  int chunks = static_cast<int>(tokens.size() / options.chunk);
  if (options.max_chunks > 0) chunks = std::min(chunks, options.max_chunks);
  if (chunks < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("the text has %d tokens: not one chunk of %d",
                                                      tokens.size(), options.chunk));
  }
  if (options.first_token >= c.vocab) {
    return absl::InvalidArgumentError("first_token is outside the vocabulary");
  }

  SquaredActivationSums sums(c.layers);
  std::unique_ptr<Model> view = model.ShareWeights();
  view->activation_transform = &sums;
  ForwardOptions forward;
  forward.precision = options.precision;
  forward.cancelled = options.cancelled;
  for (int first = 0; first < chunks; first += options.batch_chunks) {
    const int n = std::min(options.batch_chunks, chunks - first);
    std::vector<std::vector<int32_t>> ids(n);
    std::vector<SequenceInput> batch(n);
    for (int i = 0; i < n; ++i) {
      const int32_t* begin = tokens.data() + static_cast<int64_t>(first + i) * options.chunk;
      ids[i].assign(begin, begin + options.chunk);
      if (options.first_token >= 0) ids[i][0] = options.first_token;
      batch[i].tokens = ids[i];
    }
    auto stream = EmbedBatch(*view, batch);
    if (!stream.ok()) return stream.status();
    // No final norm and no logits: the layers' linear inputs are all an imatrix reads.
    if (absl::Status s = RunLayers(*view, batch, c.layers, forward, &*stream); !s.ok()) return s;
    if (options.on_progress) options.on_progress(static_cast<double>(first + n) / chunks);
  }

  Imatrix out;
  out.chunks = chunks;
  out.chunk_size = options.chunk;
  if (!options.dataset.empty()) out.datasets.push_back(options.dataset);
  for (int l = 0; l < c.layers; ++l) {
    for (int s = 0; s < kNumLinearInputSites; ++s) {
      const LinearInputSite site = static_cast<LinearInputSite>(s);
      const SquaredActivationSums::Site& sum = sums.at(l, site);
      if (sum.count == 0) continue;
      for (TensorRole role : RolesOfSite(site)) {
        const TensorNaming* naming = FindRole(c.arch, role);
        if (naming == nullptr) continue;
        ImatrixEntry e;
        e.name = TensorName(*naming, ModelFormat::kGguf, l);
        e.in_sum2.assign(sum.sum.begin(), sum.sum.end());
        e.count = sum.count;
        out.entries.push_back(std::move(e));
      }
    }
  }
  std::sort(out.entries.begin(), out.entries.end(),
            [](const ImatrixEntry& a, const ImatrixEntry& b) { return a.name < b.name; });
  return out;
}

absl::Status BoostSuperWeightColumns(const Model& model,
                                     absl::Span<const SuperWeightCoordinate> super_weights,
                                     double factor, Imatrix* imatrix) {
  if (!(factor > 0) || !std::isfinite(factor)) {
    return absl::InvalidArgumentError("the boost must be a positive factor");
  }
  const TensorNaming* down = FindRole(model.config.arch, TensorRole::kFfnDown);
  std::set<std::pair<int, int64_t>> boosted;  // a column once, however many super weights read it
  for (const SuperWeightCoordinate& sw : super_weights) {
    if (sw.expert >= 0 || down == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: only a layer's own down_proj has a column here", sw.Name()));
    }
    ImatrixEntry* e = imatrix->Find(TensorName(*down, ModelFormat::kGguf, sw.layer));
    if (e == nullptr || sw.col < 0 || sw.col >= static_cast<int64_t>(e->in_sum2.size())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the importance matrix has no such column", sw.Name()));
    }
    if (!boosted.insert({sw.layer, sw.col}).second) continue;
    const float value = static_cast<float>(e->in_sum2[sw.col] * factor);
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: boosting its column by %g overflows a float (llama-quantize refuses such a matrix)",
          sw.Name(), factor));
    }
    e->in_sum2[sw.col] = value;
  }
  return absl::OkStatus();
}

absl::Status WriteImatrixGguf(const Imatrix& imatrix, const std::string& path) {
  GgufFileWriter writer;
  writer.SetString("general.type", "imatrix");
  writer.SetStringArray("imatrix.datasets", imatrix.datasets);
  writer.SetUint32("imatrix.chunk_count", static_cast<uint32_t>(imatrix.chunks));
  writer.SetUint32("imatrix.chunk_size", static_cast<uint32_t>(imatrix.chunk_size));
  // The values the file holds, kept alive until the write.
  std::vector<std::vector<float>> counts;
  counts.reserve(imatrix.entries.size());
  for (const ImatrixEntry& e : imatrix.entries) {
    const int64_t cols = static_cast<int64_t>(e.in_sum2.size());
    absl::Status s = writer.AddTensor(
        e.name + ".in_sum2", {cols, 1}, DType::kF32,
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(e.in_sum2.data()), cols * 4));
    if (!s.ok()) return s;
    counts.push_back({static_cast<float>(e.count)});
    s = writer.AddTensor(
        e.name + ".counts", {1, 1}, DType::kF32,
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(counts.back().data()), 4));
    if (!s.ok()) return s;
  }
  return writer.WriteAtomically(path);
}

}  // namespace superweight
