#include "client/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "server address");
ABSL_FLAG(std::string, model, "", "model path relative to the server's model root");
ABSL_FLAG(std::string, text, "", "input text");
ABSL_FLAG(std::string, text_file, "", "input text from a file");
ABSL_FLAG(std::string, token_ids, "", "input token ids, comma-separated");
ABSL_FLAG(bool, json, false, "print the response as JSON with the proto's field names");
ABSL_FLAG(int32_t, expect, -1, "exit 3 unless exactly this many super weights are confirmed");
ABSL_FLAG(std::string, plot, "",
          "an SVG chart: locate: the per-layer profile; ablate: average accuracy against the "
          "super weights' scale; quantize: against the block size, RTN against SW-aware");
ABSL_FLAG(bool, bf16, false, "compute in bf16");
ABSL_FLAG(int32_t, window, 0,
          "perplexity over windows of this many tokens (0: score: the input as one sequence; "
          "the others: 512)");
ABSL_FLAG(int32_t, max_windows, 0, "at most this many windows (0: all; check: 16)");
ABSL_FLAG(float, threshold, 0, "spike threshold (default: the server's, 50)");
ABSL_FLAG(bool, skip_confirmation, false, "report candidates without measuring them");
ABSL_FLAG(std::string, job, "", "job id");
ABSL_FLAG(std::string, settings, "",
          "rows, comma-separated: prune,scale,outliers,restore_sa,token_probs (default all), "
          "prune_experts (with --prune_experts)");
ABSL_FLAG(std::string, tasks, "",
          "wikitext2,piqa,arc_easy,arc_challenge,hellaswag,winogrande,sciq,lambada "
          "(default all; quantize: none for no evaluation)");
ABSL_FLAG(int32_t, max_examples, 0, "the first N examples of each task (0: all)");
ABSL_FLAG(std::string, scales, "", "the scale rows' factors, e.g. 0,0.5,1,2");
ABSL_FLAG(double, outlier_fraction, 0, "top fraction pruned as outliers (default 1e-6)");
ABSL_FLAG(int32_t, token_prob_contexts, 0, "LAMBADA contexts of token_probs (default 500)");
ABSL_FLAG(bool, no_wait, false, "print the job id and return at once");
ABSL_FLAG(std::string, request_id, "",
          "an idempotency key: a retry with the same one gets the job the first call made");
ABSL_FLAG(std::string, bits, "", "bits per weight, comma-separated, 2..8 (default 4)");
ABSL_FLAG(std::string, block_size, "",
          "block sizes, comma-separated: elements, 'tensor' or 'row' (default: the "
          "paper's grid, tensor,1048576,262144,65536,16384)");
ABSL_FLAG(std::string, clip, "", "clip outliers first: none, z, block_top, tensor_top");
ABSL_FLAG(double, clip_value, 0,
          "z, or the top fraction (default z 9, block_top 1e-5, tensor_top 1e-6)");
ABSL_FLAG(bool, aware, false,
          "each block size twice, plain RTN and super-weight-aware (clipped, --clip "
          "or z; super weights restored)");
ABSL_FLAG(bool, restore, false, "put the super weights back after quantizing");
ABSL_FLAG(bool, keep_super_experts, false,
          "mixture of experts: the experts holding a super weight left unquantized");
ABSL_FLAG(bool, activations_int8, false,
          "INT8 activations (every linear input, per tensor), plain and with the super "
          "activations held out; alone: with FP weights and with INT8 weights per row (W8A8)");
ABSL_FLAG(int32_t, activations_hold_largest, 0,
          "with --activations_int8, a third row per weight setting: each activation tensor's K "
          "largest magnitudes held out, wherever they are (1..64)");
ABSL_FLAG(std::string, export, "",
          "write the one setting under the server's --export_root: gguf:TYPE (Q2_K, Q3_K, "
          "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32: every linear "
          "weight), gguf:mix:FILE_TYPE or gguf:Q4_K_M... (llama-quantize's choice for every "
          "tensor: Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0), "
          "hf or hf:f32");
ABSL_FLAG(std::string, export_name, "", "the export's file or directory name");
ABSL_FLAG(std::string, reference, "", "the model --model was quantized from");
ABSL_FLAG(double, max_ppl_ratio, 0, "perplexity ratio allowed (default 1.1)");
ABSL_FLAG(double, max_rel_error, 0,
          "relative error allowed per super weight (check: 0.05; recipe: what a type must keep "
          "each within, 0.01)");
ABSL_FLAG(std::string, file_type, "",
          "llama-quantize's file type the recipe is for: Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, "
          "Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0, Q4_0...");
ABSL_FLAG(std::string, output, "",
          "the output path the recipe's command line names (default MODEL_STEM.FILE_TYPE.gguf)");
ABSL_FLAG(double, min_activation_ratio, 0,
          "share of the super activation that must remain (default 0.5)");
ABSL_FLAG(std::string, super_weight_tensor_type, "",
          "gguf export: the type of the down_proj holding a super weight (F16, Q8_0)");
ABSL_FLAG(std::string, token_file, "", "file with the bearer token");
ABSL_FLAG(std::string, ca_cert, "", "PEM root certificate: connect with TLS");
ABSL_FLAG(double, timeout, 600, "seconds before the call is abandoned");

namespace superweight::client {

// Here, so that __FILE__ is the file the flags above were registered from.
const char* FlagsFile() { return __FILE__; }

std::map<std::string, std::vector<std::string>*> RepeatedFlags::ByName() {
  return {{"zero", &zero},
          {"set", &set},
          {"super_weights", &super_weights},
          {"prune_experts", &prune_experts}};
}

const std::map<std::string, std::string>& RepeatedFlagHelp() {
  static const auto* help = new std::map<std::string, std::string>{
      {"zero",
       "LAYER[:EXPERT],ROW,COL: a down_proj weight zeroed for the score (an expert's, with "
       ":EXPERT; repeat for more)"},
      {"set",
       "LAYER[:EXPERT],ROW,COL,VALUE: a down_proj weight set to VALUE for the score (repeat for "
       "more)"},
      {"super_weights",
       "LAYER[:EXPERT],ROW,COL: a super weight, instead of locating them (an expert's, with "
       ":EXPERT; repeat for more)"},
      {"prune_experts",
       "LAYER:EXPERT: an expert removed from routing, one prune_experts row each (repeat for "
       "more)"},
  };
  return *help;
}

}  // namespace superweight::client
