// recipe: the llama-quantize command line that keeps --model's super weights through
// --file_type, and what the plain file type and the recipe each make of the model (exit 3 when
// the recipe's file loses a super weight).
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "client/common.h"
#include "client/job.h"
#include "client/verb.h"

namespace superweight::client {
namespace recipe {  // one per verb: verbs compile together

void PrintOutcome(const char* name, const std::string& file_type,
                  const v1::RecipeResult::Outcome& o) {
  std::cout << absl::StrFormat("%-8s %-8s %12d %12.6g %8.4g %14.3g %12.3g  %-9s %s\n", name,
                               file_type, o.bytes(), o.perplexity(), o.perplexity_ratio(),
                               o.super_weight_max_relative_error(), o.super_activation_min_ratio(),
                               o.super_weights_kept() ? "yes" : "LOST",
                               o.passed() ? "passed" : "failed");
  for (const std::string& f : o.failures()) std::cout << "  failed: " << f << "\n";
}

void PrintRecipe(const v1::RecipeRequest& req, const v1::RecipeResponse& resp) {
  const v1::RecipeResult& r = resp.result();
  std::cout << absl::StrFormat("job %s: llama-quantize %s on %s, super weights (%s):",
                               resp.job_id(), r.file_type(), req.model(), r.super_weights_source());
  for (const auto& c : r.super_weights()) std::cout << " " << CoordinateName(c);
  std::cout << "\n";
  for (const auto& t : r.tensors()) {
    std::cout << absl::StrFormat("%s: the mix gives %s; the recipe %s%s\n", t.name(), t.mix_type(),
                                 t.chosen_type(),
                                 t.overridden() ? " (--tensor-type)" : " (kept: no override)");
    std::cout << absl::StrFormat("  %-6s %-7s %6s %16s %16s\n", "type", "written", "bits",
                                 "SW rel error", "tensor rel error");
    for (const auto& c : t.candidates()) {
      const bool chosen = c.written() == t.chosen_type();
      std::cout << absl::StrFormat("  %-6s %-7s %6.3g %16.3g %16.3g%s\n", c.type(), c.written(),
                                   c.bits_per_weight(), c.super_weight_relative_error(),
                                   c.tensor_relative_error(), chosen ? "  <-" : "");
    }
  }
  std::cout << absl::StrFormat("%-8s %-8s %12s %12s %8s %14s %12s  %-9s %s\n", "file", "type",
                               "bytes", "perplexity", "x model", "SW rel error", "SA kept",
                               "SW kept", "Check");
  PrintOutcome("plain", r.file_type(), r.plain());
  PrintOutcome("recipe", r.file_type(), r.recipe());
  std::cout << absl::StrFormat("model's perplexity %.6g (WikiText-2)\n", r.reference_perplexity());
  std::cout << "command:\n  " << r.command() << "\n";
}

Exit Run(const VerbContext& context) {
  if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_file_type).empty()) {
    return Usage("recipe wants --model=GGUF_MODEL and --file_type=Q4_K_M (or another)");
  }
  v1::RecipeRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  req.set_file_type(absl::GetFlag(FLAGS_file_type));
  for (const std::string& c : context.repeated->super_weights) {
    if (!ParseCoordinate(c, req.add_super_weights())) {
      return Usage("--super_weights wants LAYER[:EXPERT],ROW,COL");
    }
  }
  req.set_max_super_weight_error(absl::GetFlag(FLAGS_max_rel_error));
  req.set_window(absl::GetFlag(FLAGS_window));
  req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
  req.set_output(absl::GetFlag(FLAGS_output));
  req.set_precision(PrecisionFlag());
  v1::RecipeResponse resp;
  if (std::optional<Exit> done = RunJob(context, &Stub::Recipe, req, resp, &v1::Job::recipe)) {
    return *done;
  }
  if (context.json) {
    PrintJson(resp);
  } else {
    PrintRecipe(req, resp);
  }
  return resp.result().recipe().super_weights_kept() ? kDone : kNotAsExpected;
}

}  // namespace recipe

Verb RecipeVerb() {
  return {"recipe",
          "the llama-quantize command line that keeps --model's super weights through "
          "--file_type, and what the plain type and the recipe make of the model",
          {"file_type", "max_rel_error", "output"},
          nullptr,
          recipe::Run};
}

}  // namespace superweight::client
