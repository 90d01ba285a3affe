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

// Shared checks once a loader has filled config and weights: positive, consistent sizes and
// every matrix the shape the config says.
absl::Status ValidateModel(const Model& model);

// Converts a small stored vector (norm weights, biases) to f32.
std::vector<float> ToFloatVector(DType dtype, const uint8_t* data, int64_t n);

}  // namespace superweight
