#include "engine/analysis/eval_tasks.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "engine/util/utf8_prefix.h"
#include "nlohmann/json.hpp"

namespace superweight {
namespace {

using Json = nlohmann::json;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot read task data ", path));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

absl::Status Malformed(const std::string& path, int line, absl::string_view why) {
  return absl::DataLossError(absl::StrCat(path, ":", line, ": ", why));
}

// Calls parse(json, line number) for each non-empty line of a JSON-lines file, up to `limit`
// lines (0: all); stops at the first error.
absl::Status ForEachJsonLine(const std::string& path, int limit,
                             const std::function<absl::Status(const Json&, int)>& parse) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  int line_number = 0, parsed = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    if (limit > 0 && parsed == limit) break;
    Json j = Json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
      return Malformed(path, line_number, "not a JSON object");
    if (absl::Status s = parse(j, line_number); !s.ok()) return s;
    ++parsed;
  }
  return absl::OkStatus();
}

// The string at j[key], or an error naming the field.
absl::StatusOr<std::string> String(const Json& j, const char* key, const std::string& path,
                                   int line) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return Malformed(path, line, absl::StrCat("field '", key, "' missing or not a string"));
  }
  return it->get<std::string>();
}

// "Question: ...\nAnswer:" with each choice after the target delimiter " ", as lm-eval's
// piqa, arc_* and sciq tasks ask.
TaskExample QuestionAnswer(const std::string& context, const std::vector<std::string>& choices,
                           int gold) {
  TaskExample e;
  for (const std::string& c : choices) e.choices.push_back({context, " " + c});
  e.gold = gold;
  return e;
}

absl::Status LoadPiqa(const std::string& dir, int limit, Task* task) {
  const std::string labels_path = dir + "/piqa/valid-labels.lst";
  absl::StatusOr<std::string> labels_text = ReadFile(labels_path);
  if (!labels_text.ok()) return labels_text.status();
  std::vector<std::string> labels = absl::StrSplit(*labels_text, '\n', absl::SkipWhitespace());
  const std::string path = dir + "/piqa/valid.jsonl";
  return ForEachJsonLine(path, limit, [&](const Json& j, int line) -> absl::Status {
    auto goal = String(j, "goal", path, line);
    auto sol1 = String(j, "sol1", path, line);
    auto sol2 = String(j, "sol2", path, line);
    if (!goal.ok()) return goal.status();
    if (!sol1.ok()) return sol1.status();
    if (!sol2.ok()) return sol2.status();
    const size_t index = task->examples.size();
    if (index >= labels.size())
      return Malformed(labels_path, index + 1, "fewer labels than examples");
    const std::string label(absl::StripAsciiWhitespace(labels[index]));
    if (label != "0" && label != "1") return Malformed(labels_path, index + 1, "label not 0 or 1");
    task->examples.push_back(
        QuestionAnswer("Question: " + *goal + "\nAnswer:", {*sol1, *sol2}, label == "1"));
    return absl::OkStatus();
  });
}

absl::Status LoadArc(const std::string& path, int limit, Task* task) {
  return ForEachJsonLine(path, limit, [&](const Json& j, int line) -> absl::Status {
    auto question = String(j, "question", path, line);
    auto answer = String(j, "answerKey", path, line);
    if (!question.ok()) return question.status();
    if (!answer.ok()) return answer.status();
    auto choices = j.find("choices");
    if (choices == j.end() || !choices->is_object() || !(*choices)["text"].is_array() ||
        !(*choices)["label"].is_array() ||
        (*choices)["text"].size() != (*choices)["label"].size() || (*choices)["text"].empty()) {
      return Malformed(path, line, "choices must hold text and label lists of one length");
    }
    std::vector<std::string> texts;
    int gold = -1;
    for (size_t i = 0; i < (*choices)["text"].size(); ++i) {
      const Json& text = (*choices)["text"][i];
      const Json& label = (*choices)["label"][i];
      if (!text.is_string() || !label.is_string())
        return Malformed(path, line, "choice not a string");
      texts.push_back(text.get<std::string>());
      if (label.get<std::string>() == *answer) gold = static_cast<int>(i);
    }
    if (gold < 0) return Malformed(path, line, "answerKey names no choice");
    task->examples.push_back(QuestionAnswer("Question: " + *question + "\nAnswer:", texts, gold));
    return absl::OkStatus();
  });
}

absl::Status LoadSciq(const std::string& path, int limit, Task* task) {
  return ForEachJsonLine(path, limit, [&](const Json& j, int line) -> absl::Status {
    auto question = String(j, "question", path, line);
    auto correct = String(j, "correct_answer", path, line);
    if (!question.ok()) return question.status();
    if (!correct.ok()) return correct.status();
    auto distractors = j.find("distractors");
    if (distractors == j.end() || !distractors->is_array() || distractors->size() != 3) {
      return Malformed(path, line, "distractors must be a list of three");
    }
    std::vector<std::string> choices;
    for (const Json& d : *distractors) {
      if (!d.is_string()) return Malformed(path, line, "distractor not a string");
      choices.push_back(d.get<std::string>());
    }
    choices.push_back(*correct);
    // lm-eval's "{{support.lstrip()}}\nQuestion: ...": this copy has no support passages, so
    // the context is what that template gives for an empty one.
    task->examples.push_back(QuestionAnswer("\nQuestion: " + *question + "\nAnswer:", choices, 3));
    return absl::OkStatus();
  });
}

// llama.cpp's HellaSwag text: per example a context line (already lm-eval's query), the gold
// index, and four ending lines (preprocessed here as lm-eval preprocesses its endings).
absl::Status LoadHellaSwag(const std::string& path, int limit, Task* task) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::vector<std::string> lines = absl::StrSplit(*text, '\n');
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.size() % 6 != 0)
    return Malformed(path, lines.size(), "not a whole number of 6-line examples");
  for (size_t i = 0;
       i < lines.size() && (limit <= 0 || static_cast<int>(task->examples.size()) < limit);
       i += 6) {
    int gold = -1;
    if (lines[i + 1].size() == 1 && lines[i + 1][0] >= '0' && lines[i + 1][0] <= '3') {
      gold = lines[i + 1][0] - '0';
    }
    if (gold < 0) return Malformed(path, i + 2, "gold index not 0-3");
    TaskExample e;
    const std::string context = HellaSwagPreprocess(lines[i]);
    for (int c = 0; c < 4; ++c) {
      e.choices.push_back({context, " " + HellaSwagPreprocess(lines[i + 2 + c])});
    }
    e.gold = gold;
    task->examples.push_back(std::move(e));
  }
  return absl::OkStatus();
}

// lm-eval's partial scoring: each option substituted for the blank is a context, and the part of
// the sentence after the blank the continuation they share.
absl::Status LoadWinogrande(const std::string& path, int limit, Task* task) {
  return ForEachJsonLine(path, limit, [&](const Json& j, int line) -> absl::Status {
    auto sentence = String(j, "sentence", path, line);
    auto option1 = String(j, "option1", path, line);
    auto option2 = String(j, "option2", path, line);
    auto answer = String(j, "answer", path, line);
    if (!sentence.ok()) return sentence.status();
    if (!option1.ok()) return option1.status();
    if (!option2.ok()) return option2.status();
    if (!answer.ok()) return answer.status();
    const size_t blank = sentence->find('_');
    if (blank == std::string::npos) return Malformed(path, line, "sentence has no blank");
    if (*answer != "1" && *answer != "2") return Malformed(path, line, "answer not 1 or 2");
    const std::string target =
        " " + std::string(absl::StripAsciiWhitespace(sentence->substr(blank + 1)));
    TaskExample e;
    for (const std::string* option : {&*option1, &*option2}) {
      e.choices.push_back({sentence->substr(0, blank) + *option, target});
    }
    e.gold = *answer == "2";
    task->examples.push_back(std::move(e));
    return absl::OkStatus();
  });
}

// lambada_openai: the text up to its last space, and the last word (with that space) to predict.
absl::Status LoadLambada(const std::string& path, int limit, Task* task) {
  return ForEachJsonLine(path, limit, [&](const Json& j, int line) -> absl::Status {
    auto text = String(j, "text", path, line);
    if (!text.ok()) return text.status();
    const size_t space = text->rfind(' ');
    if (space == std::string::npos || space == 0 || space + 1 == text->size()) {
      return Malformed(path, line, "text has no last word");
    }
    TaskExample e;
    e.choices.push_back({text->substr(0, space), text->substr(space)});
    task->examples.push_back(std::move(e));
    return absl::OkStatus();
  });
}

}  // namespace

const std::vector<std::string>& ZeroShotTaskNames() {
  static const std::vector<std::string> names = {
      "piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "sciq", "lambada"};
  return names;
}

absl::Status CheckTaskName(absl::string_view name) {
  const std::vector<std::string>& names = ZeroShotTaskNames();
  if (std::find(names.begin(), names.end(), name) != names.end()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unknown task '", Utf8Prefix(name, 64),
                                                 "'; expected one of ", absl::StrJoin(names, ", "),
                                                 " (or wikitext2)"));
}

std::string HellaSwagPreprocess(absl::string_view text) {
  std::string s(absl::StripAsciiWhitespace(text));
  s = absl::StrReplaceAll(s, {{" [title]", ". "}});
  // re.sub("\\[.*?\\]", "", text): each '[' up to the next ']' removed.
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '[') {
      const size_t close = s.find(']', i + 1);
      if (close != std::string::npos) {
        i = close;
        continue;
      }
    }
    out += s[i];
  }
  return absl::StrReplaceAll(out, {{"  ", " "}});
}

absl::StatusOr<Task> LoadTask(absl::string_view name, const std::string& data_dir,
                              int max_examples) {
  Task task;
  task.name = std::string(name);
  absl::Status status;
  if (name == "piqa") {
    status = LoadPiqa(data_dir, max_examples, &task);
  } else if (name == "arc_easy") {
    status = LoadArc(data_dir + "/arc/arc_easy_test.jsonl", max_examples, &task);
  } else if (name == "arc_challenge") {
    status = LoadArc(data_dir + "/arc/arc_challenge_test.jsonl", max_examples, &task);
  } else if (name == "hellaswag") {
    status = LoadHellaSwag(data_dir + "/hellaswag/hellaswag_val_full.txt", max_examples, &task);
  } else if (name == "winogrande") {
    task.metric = TaskMetric::kMultipleChoiceAccOnly;
    status = LoadWinogrande(data_dir + "/winogrande/dev.jsonl", max_examples, &task);
  } else if (name == "sciq") {
    status = LoadSciq(data_dir + "/sciq/sciq_test_nosupport.jsonl", max_examples, &task);
  } else if (name == "lambada") {
    task.metric = TaskMetric::kLastWord;
    status = LoadLambada(data_dir + "/lambada/lambada_test.jsonl", max_examples, &task);
  } else {
    return CheckTaskName(name);
  }
  if (!status.ok()) return status;
  if (task.examples.empty()) {
    return absl::DataLossError(absl::StrCat("task ", task.name, " has no examples"));
  }
  return task;
}

}  // namespace superweight
