#include "server/jobs/job_planner.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/analysis/ablate.h"
#include "engine/analysis/eval_tasks.h"
#include "engine/util/utf8_prefix.h"
#include "server/convert.h"

namespace superweight::server {

absl::Status PlanContext::SetConfirmation(const Model& model, const std::string& text,
                                          LocateOptions* options) const {
  if (text.empty() || model.tokenizer == nullptr) return absl::OkStatus();
  EncodeOptions encode;
  encode.add_bos = model.config.add_bos;
  encode.max_tokens = static_cast<size_t>(max_text_tokens);
  auto tokenized = model.tokenizer->Tokenize(text, encode);
  if (!tokenized.ok()) {
    return absl::Status(tokenized.status().code(),
                        absl::StrCat("confirmation text: ", tokenized.status().message()));
  }
  options->confirm_tokens = std::move(*tokenized);
  options->confirm_window = std::min<int>(512, options->confirm_tokens.size());
  if (options->confirm_window < 2) options->confirm_tokens.clear();
  return absl::OkStatus();
}

absl::Status PlanContext::CheckWindow(int window) const {
  // Each window is one pass: the per-sequence limit holds whatever the text's length.
  if (window > max_tokens) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "window %d is over the server's limit of %d tokens per sequence (--max_tokens)", window,
        max_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<EvaluationRequest> PlanContext::CheckEvaluation(
    const Model& m, const google::protobuf::RepeatedPtrField<std::string>& requested,
    int max_examples, int window, int max_windows) const {
  if (max_examples < 0 || max_windows < 0 || window < 0 || window == 1) {
    return absl::InvalidArgumentError(
        "max_examples and max_windows must not be negative, and window must be 0 (the default, "
        "512) or at least 2");
  }
  if (absl::Status s = CheckWindow(window); !s.ok()) return s;
  if (m.tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        "this model has no tokenizer: the evaluation harness scores text (WikiText-2 and the "
        "zero-shot tasks)");
  }
  std::vector<std::string> tasks(requested.begin(), requested.end());
  if (tasks.empty()) {
    tasks = {"wikitext2"};
    for (const std::string& t : ZeroShotTaskNames()) tasks.push_back(t);
  }
  EvaluationRequest request;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const std::string& name = tasks[i];
    if (std::find(tasks.begin(), tasks.begin() + i, name) != tasks.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("task ", Utf8Prefix(name, 40),
                       " is given more than once (it would count twice in the "
                       "average)"));
    }
    if (name == "wikitext2") {
      request.wikitext2 = true;
      continue;
    }
    if (absl::Status s = CheckTaskName(name); !s.ok()) return s;
    request.tasks.push_back(name);
  }
  request.max_examples = max_examples;
  request.window = window > 0 ? window : 512;
  request.max_windows = max_windows;
  return request;
}

absl::Status PlanContext::SuperWeightsOrLocate(
    const Model& m, const google::protobuf::RepeatedPtrField<v1::Coordinate>& named,
    Precision precision, JobWork* work, std::vector<SuperWeightCoordinate>* super_weights) const {
  for (const v1::Coordinate& c : named) {
    if (c.has_expert() && c.expert() < 0) {
      return absl::InvalidArgumentError(absl::StrFormat("expert %d is negative", c.expert()));
    }
    super_weights->push_back(FromProto(c));
  }
  if (absl::Status s = CheckSuperWeights(m, *super_weights); !s.ok()) return s;
  if (!super_weights->empty()) return absl::OkStatus();
  if (m.tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        "this model has no tokenizer to locate its super weights: name them with super_weights");
  }
  work->locate_super_weights = true;
  work->tokens = m.tokenizer->Encode(kPaperPrompt, m.config.add_bos);
  work->locate.precision = precision;
  return SetConfirmation(m, confirm_text, &work->locate);
}

namespace {

// FNV-1a, 64 bits: a fingerprint to tell files apart, not a defence against anyone.
uint64_t Fnv1a(const uint8_t* data, size_t size, uint64_t hash) {
  for (size_t i = 0; i < size; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string FileIdentity(const MappedFile& file) {
  constexpr size_t kHead = 64 << 10;
  constexpr size_t kSample = 4 << 10;
  constexpr int kSamples = 16;
  uint64_t hash = Fnv1a(file.data(), std::min(kHead, file.size()), 0xcbf29ce484222325ULL);
  if (file.size() > kHead + kSample) {
    const size_t stride = (file.size() - kHead - kSample) / kSamples;
    for (int i = 1; i <= kSamples; ++i) {
      hash = Fnv1a(file.data() + kHead + stride * i, kSample, hash);  // the last ends at the end
    }
  }
  return absl::StrFormat("%s:%d:%016x", BaseName(file.path()), file.size(), hash);
}

}  // namespace

std::string ModelIdentity(const JobWork& work) {
  std::string identity;
  for (const Model* model : {work.model.get(), work.reference.get()}) {
    if (model == nullptr) continue;
    for (const auto& file : model->files) {
      if (!identity.empty()) identity += ";";
      identity += FileIdentity(*file);
    }
  }
  return identity;
}

absl::Status CheckModelIdentity(const JobWork& work, const std::string& identity) {
  const std::string here = ModelIdentity(work);
  if (identity.empty() || here == identity) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the model files this job was submitted against are not the ones this replica reads: it "
      "recorded ",
      Utf8Prefix(identity, 300), ", this replica has ", Utf8Prefix(here, 300),
      " (every replica must read the same model root)"));
}

}  // namespace superweight::server
