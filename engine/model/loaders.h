// One loader per file format; each fills a Model with views into its memory maps.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace superweight {

absl::StatusOr<std::unique_ptr<Model>> OpenHuggingFaceModel(const std::string& dir);
absl::StatusOr<std::unique_ptr<Model>> OpenGgufModel(const std::string& path);
absl::StatusOr<std::unique_ptr<Model>> OpenLlama2cModel(const std::string& path);

// Every number a config or header claims, checked before anything is allocated from it: sizes
// positive and within bounds, heads divisible, epsilon and rope theta finite and positive.
// INVALID_ARGUMENT naming the field.
absl::Status ValidateConfig(const ModelConfig& config, const std::string& path);

// Shared checks once a loader has filled config and weights: ValidateConfig, and every matrix
// the shape the config says.
absl::Status ValidateModel(const Model& model);

// Views q, k, v and gate, up as row slices of Phi-3's fused qkv_proj and gate_up_proj (gate
// rows first); refuses shapes that do not add up.
absl::Status SplitFusedProjections(const Matrix& qkv, const Matrix& gate_up, const ModelConfig& c,
                                   int layer, LayerWeights* w);

// Gemma's sliding-window pattern as both formats give it by number: every `every`-th layer global,
// the others sliding (every <= 0: all sliding), as transformers and llama.cpp count it.
std::vector<bool> SlidingEvery(int layers, int64_t every);

// Converts a small stored vector (norm weights, biases) to f32.
std::vector<float> ToFloatVector(DType dtype, const uint8_t* data, int64_t n);

}  // namespace superweight
