#include "server/evaluation_inputs.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/tokenizer.h"

namespace superweight::server {

template <typename T, typename Make>
absl::StatusOr<std::shared_ptr<const T>> EvaluationInputs::Cached(
    const std::string& key, const std::shared_ptr<const Model>& model, Make make) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key != key) continue;
      if (it->per_model && it->model.lock() != model) continue;  // another model's tokens
      entries_.splice(entries_.begin(), entries_, it);
      return std::static_pointer_cast<const T>(it->value);
    }
  }
  // Read outside the lock; two jobs missing at once both read, and the later one's copy stays.
  absl::StatusOr<T> made = make();
  if (!made.ok()) return made.status();
  auto value = std::make_shared<const T>(std::move(*made));
  std::lock_guard<std::mutex> lock(mu_);
  entries_.remove_if([](const Entry& e) { return e.per_model && e.model.expired(); });
  entries_.push_front(Entry{key, model != nullptr, model, value});
  while (entries_.size() > capacity_) entries_.pop_back();
  return value;
}

absl::StatusOr<std::shared_ptr<const std::vector<int32_t>>> EvaluationInputs::WikiText2(
    const std::shared_ptr<const Model>& model) {
  return Cached<std::vector<int32_t>>(
      absl::StrCat("wikitext2 ", model->path), model,
      [&]() -> absl::StatusOr<std::vector<int32_t>> {
        std::ifstream f(data_dir_ + "/wikitext2/wiki.test.raw", std::ios::binary);
        if (!f) return absl::FailedPreconditionError("the server has no WikiText-2 test text");
        std::stringstream text;
        text << f.rdbuf();
        return model->tokenizer->Encode(text.str(), model->config.add_bos);
      });
}

absl::StatusOr<std::shared_ptr<const Task>> EvaluationInputs::GetTask(const std::string& name,
                                                                      int max_examples) {
  return Cached<Task>(
      absl::StrCat("task ", name, " ", max_examples), nullptr, [&]() -> absl::StatusOr<Task> {
        auto task = LoadTask(name, data_dir_, max_examples);
        if (!task.ok() && !absl::IsInvalidArgument(task.status())) {
          return absl::FailedPreconditionError(
              absl::StrCat("the server cannot read task ", name, ": ", task.status().message()));
        }
        return task;
      });
}

absl::Status EvaluationInputs::Load(const EvaluationRequest& request,
                                    const std::shared_ptr<const Model>& model, EvaluationPlan* plan,
                                    std::vector<std::vector<int32_t>>* token_prob_contexts) {
  if (model->tokenizer == nullptr) {
    return absl::FailedPreconditionError("this model has no tokenizer to evaluate with");
  }
  if (request.wikitext2) {
    auto tokens = WikiText2(model);
    if (!tokens.ok()) return tokens.status();
    plan->wikitext2 = **tokens;
  }
  for (const std::string& name : request.tasks) {
    auto task = GetTask(name, request.max_examples);
    if (!task.ok()) return task.status();
    plan->tasks.push_back(**task);
  }
  plan->window = request.window;
  plan->max_windows = request.max_windows;
  if (token_prob_contexts != nullptr && request.token_prob_contexts > 0) {
    auto lambada = GetTask("lambada", request.token_prob_contexts);
    if (!lambada.ok()) return lambada.status();
    for (const TaskExample& e : (*lambada)->examples) {
      token_prob_contexts->push_back(
          model->tokenizer->Encode(e.choices[0].context, /*add_bos=*/false));
    }
  }
  return absl::OkStatus();
}

}  // namespace superweight::server
