// What evaluation jobs read (--eval_data_dir): WikiText-2's test split, tokenized per model, and
// the zero-shot tasks. Read when a job runs, never when it is queued, so that a queued job holds
// its request and nothing more; and shared, as every job on a model reads the same: the most
// recently used few are kept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/analysis/eval_tasks.h"
#include "engine/analysis/harness.h"
#include "engine/model/model.h"

namespace superweight::server {

// What a job's evaluation reads, as its request named it (checked when it was planned).
struct EvaluationRequest {
  bool wikitext2 = false;
  std::vector<std::string> tasks;  // zero-shot task names, in the request's order
  int max_examples = 0;            // per task; 0: all
  int window = 512;
  int max_windows = 0;
  int token_prob_contexts = 0;  // LAMBADA contexts tokenized for Ablate's token probabilities
};

class EvaluationInputs {
 public:
  explicit EvaluationInputs(std::string data_dir, size_t capacity = 8)
      : data_dir_(std::move(data_dir)), capacity_(capacity) {}

  // FAILED_PRECONDITION where the server cannot read WikiText-2 or `name`.
  absl::StatusOr<std::shared_ptr<const std::vector<int32_t>>> WikiText2(
      const std::shared_ptr<const Model>& model);
  absl::StatusOr<std::shared_ptr<const Task>> GetTask(const std::string& name, int max_examples);

  // The request's plan for `model` (which needs a tokenizer), and the token-probability
  // contexts where asked.
  absl::Status Load(const EvaluationRequest& request, const std::shared_ptr<const Model>& model,
                    EvaluationPlan* plan,
                    std::vector<std::vector<int32_t>>* token_prob_contexts = nullptr);

 private:
  struct Entry {
    std::string key;
    bool per_model = false;
    std::weak_ptr<const Model> model;  // tokens are the model's: dead with it
    std::shared_ptr<const void> value;
  };
  template <typename T, typename Make>
  absl::StatusOr<std::shared_ptr<const T>> Cached(const std::string& key,
                                                  const std::shared_ptr<const Model>& model,
                                                  Make make);

  const std::string data_dir_;
  const size_t capacity_;
  std::mutex mu_;
  std::list<Entry> entries_;  // most recently used first
};

}  // namespace superweight::server
