// The client's flags: absl's, all defined in flags.cc (--help lists a flag that no help group
// names by that file, and the e2e tests read their names from it), and the repeatable ones that
// the command line takes itself.
#ifndef SUPERWEIGHT_CLIENT_FLAGS_H_
#define SUPERWEIGHT_CLIENT_FLAGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, server);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, text);
ABSL_DECLARE_FLAG(std::string, text_file);
ABSL_DECLARE_FLAG(std::string, token_ids);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int32_t, expect);
ABSL_DECLARE_FLAG(std::string, plot);
ABSL_DECLARE_FLAG(bool, bf16);
ABSL_DECLARE_FLAG(int32_t, window);
ABSL_DECLARE_FLAG(int32_t, max_windows);
ABSL_DECLARE_FLAG(float, threshold);
ABSL_DECLARE_FLAG(bool, skip_confirmation);
ABSL_DECLARE_FLAG(std::string, job);
ABSL_DECLARE_FLAG(std::string, settings);
ABSL_DECLARE_FLAG(std::string, tasks);
ABSL_DECLARE_FLAG(int32_t, max_examples);
ABSL_DECLARE_FLAG(std::string, scales);
ABSL_DECLARE_FLAG(double, outlier_fraction);
ABSL_DECLARE_FLAG(int32_t, token_prob_contexts);
ABSL_DECLARE_FLAG(bool, no_wait);
ABSL_DECLARE_FLAG(std::string, request_id);
ABSL_DECLARE_FLAG(std::string, bits);
ABSL_DECLARE_FLAG(std::string, block_size);
ABSL_DECLARE_FLAG(std::string, clip);
ABSL_DECLARE_FLAG(double, clip_value);
ABSL_DECLARE_FLAG(bool, aware);
ABSL_DECLARE_FLAG(bool, restore);
ABSL_DECLARE_FLAG(bool, keep_super_experts);
ABSL_DECLARE_FLAG(bool, activations_int8);
ABSL_DECLARE_FLAG(int32_t, activations_hold_largest);
ABSL_DECLARE_FLAG(std::string, export);
ABSL_DECLARE_FLAG(std::string, export_name);
ABSL_DECLARE_FLAG(std::string, reference);
ABSL_DECLARE_FLAG(double, max_ppl_ratio);
ABSL_DECLARE_FLAG(double, max_rel_error);
ABSL_DECLARE_FLAG(std::string, file_type);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(double, min_activation_ratio);
ABSL_DECLARE_FLAG(std::string, super_weight_tensor_type);
ABSL_DECLARE_FLAG(std::string, token_file);
ABSL_DECLARE_FLAG(std::string, ca_cert);
ABSL_DECLARE_FLAG(double, timeout);

namespace superweight::client {

// The source file that defines the absl flags, as their registrations name it (for
// cli::FlagsDefinedIn).
const char* FlagsFile();

// The repeatable flags, taken by the command line itself: their values hold commas, on which
// absl's list flags would split them.
struct RepeatedFlags {
  std::vector<std::string> zero, set, super_weights, prune_experts;

  // Each flag's name and where its values go, for cli::Parse.
  std::map<std::string, std::vector<std::string>*> ByName();
};

// The repeatable flags' help, by name.
const std::map<std::string, std::string>& RepeatedFlagHelp();

}  // namespace superweight::client

#endif  // SUPERWEIGHT_CLIENT_FLAGS_H_
