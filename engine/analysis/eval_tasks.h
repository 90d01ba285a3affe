// The zero-shot tasks of the paper's evaluation, built as lm-evaluation-harness 0.4 builds them:
// each example is a set of (context, continuation) loglikelihood requests, with the prompts,
// target delimiters and preprocessing of its task definitions. Readers of the data files in
// their published formats; the files are untrusted input (a malformed line is an error naming
// the file and line).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace superweight {

// One loglikelihood request: log p(continuation | context), the continuation scored token by
// token after the context.
struct LoglikelihoodRequest {
  std::string context;
  std::string continuation;
};

struct TaskExample {
  std::vector<LoglikelihoodRequest> choices;  // multiple choice; LAMBADA: one, the last word
  int gold = 0;
};

enum class TaskMetric {
  kMultipleChoice,         // acc (argmax of summed log-probability) and acc_norm (per character)
  kMultipleChoiceAccOnly,  // acc only (Winogrande: the choices share their continuation)
  kLastWord,               // LAMBADA: acc (greedy) and perplexity of the last word
};

struct Task {
  std::string name;
  TaskMetric metric = TaskMetric::kMultipleChoice;
  std::vector<TaskExample> examples;
};

// The task names accepted: piqa, arc_easy, arc_challenge, hellaswag, winogrande, sciq, lambada.
const std::vector<std::string>& ZeroShotTaskNames();
// INVALID_ARGUMENT naming the accepted names, for a name not among them.
absl::Status CheckTaskName(absl::string_view name);

// Reads task `name` from `data_dir` (the layout of server/data/eval: piqa/valid.jsonl and
// valid-labels.lst, arc/arc_easy_test.jsonl, arc/arc_challenge_test.jsonl,
// hellaswag/hellaswag_val_full.txt, winogrande/dev.jsonl, sciq/sciq_test_nosupport.jsonl,
// lambada/lambada_test.jsonl); the first `max_examples` examples (0: all). INVALID_ARGUMENT
// for an unknown name, NOT_FOUND for a missing file, DATA_LOSS for a malformed one.
absl::StatusOr<Task> LoadTask(absl::string_view name, const std::string& data_dir,
                              int max_examples = 0);

// lm-evaluation-harness's HellaSwag `preprocess`: strips, turns " [title]" into ". ", drops
// other bracketed tags, and folds double spaces.
std::string HellaSwagPreprocess(absl::string_view text);

}  // namespace superweight
