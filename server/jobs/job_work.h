// The engine-side inputs of a job, validated when it is submitted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/analysis/ablate.h"
#include "engine/analysis/check.h"
#include "engine/analysis/locate.h"
#include "engine/analysis/quantize.h"
#include "engine/analysis/quantize_recipe.h"
#include "engine/formats/llama_quantize_plan.h"
#include "engine/model/model.h"
#include "engine/runtime/edit_set.h"
#include "engine/runtime/matmul.h"

namespace superweight::server {

struct JobWork {
  std::shared_ptr<const Model> model;
  // What the job reads that its request only names (evaluation data), read when it runs: set
  // by the plan, called once by the queue before the job's kind runs it.
  std::function<absl::Status(JobWork&)> load_inputs;
  std::vector<int32_t> tokens;
  Precision precision = Precision::kF32;
  EditSet edits;
  // Score: window 0 scores one sequence; > 0 is perplexity over windows.
  int window = 0;
  int max_windows = 0;
  // Locate; Ablate and Quantize when they locate their super weights first
  // (locate_super_weights), on `tokens`.
  LocateOptions locate;
  std::string known_model;
  bool locate_super_weights = false;
  // Ablate.
  AblateOptions ablate;
  // Quantize.
  QuantizeOptions quantize;
  // Whether the request named its settings (a setting that needs a super weight is then refused
  // where there is none, rather than left out of the default grid).
  bool quantize_settings_named = false;
  struct Export {
    std::string format;         // "" (none), "gguf", "hf"
    DType type = DType::kQ4_1;  // gguf: the linear weights'; hf: BF16 or F32
    // gguf: llama-quantize's choices for this file type instead of `type` everywhere.
    std::optional<LlamaFtype> llama_file_type;
    DType super_weight_tensor_type = DType::kF16;
    std::string path;    // absolute, under --export_root: where it is published
    std::string staged;  // absolute, beside path: where it is written (engine/util/publish.h)
    std::string relative_path;
    std::string model;  // the registry's name for it, or ""
  } quantize_export;
  // Recipe: the llama-quantize overrides for `model` (the check's reference too), and the
  // command line's output path.
  RecipeOptions recipe;
  std::string recipe_output;
  // Check: `model` is the quantized one.
  std::shared_ptr<const Model> reference;
  CheckOptions check;
};

}  // namespace superweight::server
