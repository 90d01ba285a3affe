// Protobuf <-> engine types, in one place.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/analysis/ablate.h"
#include "engine/analysis/locate.h"
#include "engine/analysis/quantize.h"
#include "engine/model/model.h"
#include "engine/runtime/edit_set.h"
#include "server/model_registry.h"
#include "superweight/v1/superweight.pb.h"

namespace superweight::server {

Precision FromProto(v1::Precision p);
// A coordinate (expert -1 where the message names none) and back.
SuperWeightCoordinate FromProto(const v1::Coordinate& c);
void ToProto(const SuperWeightCoordinate& c, v1::Coordinate* out);
absl::StatusOr<EditSet> FromProto(const v1::EditSet& edits, const Model& model);
// Token ids of an Input, checked against the model's vocabulary and `max_tokens`.
absl::StatusOr<std::vector<int32_t>> TokensFromInput(const v1::Input& input, const Model& model,
                                                     int max_tokens,
                                                     const std::string& fallback_text);
v1::LocateResult ToProto(const LocateResult& r);
// One line a person can read: how many super weights were confirmed, and each with its effect.
std::string LocateSummary(const LocateResult& r);
// Rows and token probabilities; metrics named TASK/acc, TASK/acc_norm, wikitext2/perplexity,
// lambada/perplexity, average/acc.
v1::AblateResult ToProto(const AblateResult& r);
// A request's setting, its default clip value filled in, and checked:
// INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<QuantizeSetting> FromProto(const v1::QuantizeSetting& s);
v1::QuantizeSetting ToProto(const QuantizeSetting& s);
// Rows with Ablate's metrics plus weights/mse.
v1::QuantizeResult ToProto(const std::vector<QuantizeTableRow>& rows);
v1::ModelInfo ToProto(const ModelSummary& m, const std::string& name);

}  // namespace superweight::server
