// quantize: round-to-nearest quantization, plain and super-weight-aware, with INT8 activations,
// and an export; its table and its plot against the block size.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/common.h"
#include "client/job.h"
#include "client/plot.h"
#include "client/verb.h"

namespace superweight::client {
namespace quantize {  // one per verb: verbs compile together

// Average zero-shot accuracy (or, without tasks, WikiText-2 perplexity) against the block size,
// plain RTN against super-weight-aware, as the paper's Figure 7; whole-tensor blocks rightmost.
bool PlotQuantization(const v1::QuantizeResult& r, const std::string& path) {
  bool has_acc = false;
  for (const auto& row : r.rows()) has_acc |= row.metrics().count("average/acc") > 0;
  const std::string metric = has_acc ? "average/acc" : "wikitext2/perplexity";
  Series rtn{"RTN", "#c33", {}}, aware{"SW-aware", "#36c", {}};
  std::vector<std::pair<double, std::string>> ticks;
  double widest = 0;
  for (const auto& row : r.rows()) widest = std::max<double>(widest, row.spec().block_size());
  for (const auto& row : r.rows()) {
    auto m = row.metrics().find(metric);
    if (m == row.metrics().end() || row.spec().full_precision() || row.spec().block_size() < 0 ||
        row.spec().activation_bits() > 0) {
      continue;
    }
    const bool tensor = row.spec().block_size() == 0;
    const double x =
        tensor ? std::log2(std::max(2.0, widest)) + 2 : std::log2(row.spec().block_size());
    ticks.push_back({x, tensor ? "tensor" : absl::StrFormat("2^%.0f", x)});
    (row.spec().restore_super_weights() ? aware : rtn).points.push_back({x, m->second});
  }
  return PlotLines(path, metric + " against the block size", "block size (elements)", {rtn, aware},
                   ticks);
}

// The settings the flags ask for, in the order of the table's rows; an error names the flag.
absl::Status AddSettings(v1::QuantizeRequest* req) {
  std::vector<int32_t> bits;
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_bits), ',', absl::SkipEmpty())) {
    int32_t b;
    if (!absl::SimpleAtoi(v, &b))
      return absl::InvalidArgumentError("--bits wants comma-separated integers");
    bits.push_back(b);
  }
  std::vector<int64_t> blocks;
  for (absl::string_view v :
       absl::StrSplit(absl::GetFlag(FLAGS_block_size), ',', absl::SkipEmpty())) {
    int64_t b;
    if (v == "tensor") {
      b = 0;
    } else if (v == "row") {
      b = -1;
    } else if (!absl::SimpleAtoi(v, &b) || b <= 0) {
      return absl::InvalidArgumentError("--block_size wants positive integers, 'tensor' or 'row'");
    }
    blocks.push_back(b);
  }
  const std::string clip = absl::GetFlag(FLAGS_clip);
  const bool aware = absl::GetFlag(FLAGS_aware);
  const bool activations_int8 = absl::GetFlag(FLAGS_activations_int8);
  const bool weight_flags = !bits.empty() || !blocks.empty() || !clip.empty() || aware ||
                            absl::GetFlag(FLAGS_restore) || absl::GetFlag(FLAGS_keep_super_experts);
  if (activations_int8 && !weight_flags) {  // FP and INT8-per-row weights (W8A8)
    req->add_settings()->set_full_precision(true);
    v1::QuantizeSetting* w8 = req->add_settings();
    w8->set_bits(8);
    w8->set_block_size(-1);
  }
  if (weight_flags) {
    if (bits.empty()) bits = {4};
    if (blocks.empty()) blocks = {0, 1048576, 262144, 65536, 16384};
    for (int32_t b : bits) {
      for (int64_t block : blocks) {
        v1::QuantizeSetting* s = req->add_settings();
        s->set_bits(b);
        s->set_block_size(block);
        if (aware) {  // the plain row, then the aware one
          *req->add_settings() = *s;
          s = req->mutable_settings(req->settings_size() - 1);
          s->set_clip(clip.empty() ? "z" : clip);
          s->set_restore_super_weights(true);
        } else {
          s->set_clip(clip);
          s->set_restore_super_weights(absl::GetFlag(FLAGS_restore));
        }
        s->set_clip_value(absl::GetFlag(FLAGS_clip_value));
        s->set_keep_super_experts(absl::GetFlag(FLAGS_keep_super_experts));
      }
    }
  }
  if (activations_int8) {
    // Each weight setting with INT8 activations: plain, the super activations held out, and
    // (--activations_hold_largest) each tensor's largest held out; a setting's rows side by side.
    const int largest = absl::GetFlag(FLAGS_activations_hold_largest);
    std::vector<v1::QuantizeSetting> ordered;
    for (v1::QuantizeSetting plain : req->settings()) {
      plain.set_activation_bits(8);
      ordered.push_back(plain);
      ordered.push_back(plain);
      ordered.back().set_hold_out_super_activations(true);
      if (largest != 0) {
        ordered.push_back(plain);
        ordered.back().set_hold_out_largest_activations(largest);
      }
    }
    req->clear_settings();
    for (const v1::QuantizeSetting& setting : ordered) *req->add_settings() = setting;
  }
  return absl::OkStatus();
}

void PrintQuantize(const v1::QuantizeResponse& resp) {
  PrintSuperWeights(resp.job_id(), resp.result());
  if (resp.result().skipped_settings_size() > 0) {
    std::cout << "no super weight: left out "
              << absl::StrJoin(resp.result().skipped_settings(), ", ") << "\n";
  }
  PrintRows(resp.result().rows());
  if (resp.result().has_exported()) {
    const v1::ExportedModel& e = resp.result().exported();
    std::cout << absl::StrFormat("exported %s: %s (%d bytes, sha256 %s)%s\n", e.format(), e.path(),
                                 e.bytes(), e.sha256(),
                                 e.model().empty() ? "" : ", served as " + e.model());
  }
}

Exit Run(const VerbContext& context) {
  v1::QuantizeRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  if (absl::Status s = AddSettings(&req); !s.ok()) return Usage(std::string(s.message()));
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipEmpty()))
    req.add_tasks(std::string(v));
  for (const std::string& c : context.repeated->super_weights) {
    if (!ParseCoordinate(c, req.add_super_weights())) {
      return Usage("--super_weights wants LAYER[:EXPERT],ROW,COL");
    }
  }
  req.set_max_examples(absl::GetFlag(FLAGS_max_examples));
  req.set_window(absl::GetFlag(FLAGS_window));
  req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
  req.set_precision(PrecisionFlag());
  req.set_export_format(absl::GetFlag(FLAGS_export));
  req.set_export_name(absl::GetFlag(FLAGS_export_name));
  req.set_super_weight_tensor_type(absl::GetFlag(FLAGS_super_weight_tensor_type));
  v1::QuantizeResponse resp;
  if (std::optional<Exit> done = RunJob(context, &Stub::Quantize, req, resp, &v1::Job::quantize)) {
    return *done;
  }
  if (context.json) {
    PrintJson(resp);
  } else {
    PrintQuantize(resp);
  }
  const std::string plot = absl::GetFlag(FLAGS_plot);
  if (!plot.empty() && !PlotQuantization(resp.result(), plot)) {
    return Usage("cannot write --plot " + plot);
  }
  return kDone;
}

absl::Status CheckFlags(const std::set<std::string>& given) {
  auto error = [](auto... args) { return absl::InvalidArgumentError(absl::StrFormat(args...)); };
  auto has = [&](const char* flag) { return given.count(flag) > 0; };
  for (const char* flag : {"export_name", "super_weight_tensor_type"}) {
    if (has(flag) && absl::GetFlag(FLAGS_export).empty()) {
      return error("--%s is for an export: give --export", flag);
    }
  }
  if (has("activations_hold_largest") && !absl::GetFlag(FLAGS_activations_int8)) {
    return error(
        "--activations_hold_largest is for quantized activations: give --activations_int8");
  }
  if (has("clip_value") && absl::GetFlag(FLAGS_clip).empty() && !absl::GetFlag(FLAGS_aware)) {
    return error("--clip_value is for clipping: give --clip or --aware");
  }
  if (absl::GetFlag(FLAGS_restore) && absl::GetFlag(FLAGS_aware)) {
    return error(
        "--restore: --aware restores the super weights in its rows and keeps the "
        "others plain");
  }
  return absl::OkStatus();
}

}  // namespace quantize

Verb QuantizeVerb() {
  return {"quantize",
          "round-to-nearest quantization, plain and super-weight-aware; an export",
          {"bits", "block_size", "clip", "clip_value", "aware", "restore", "keep_super_experts",
           "activations_int8", "activations_hold_largest", "export", "export_name",
           "super_weight_tensor_type"},
          quantize::CheckFlags,
          quantize::Run};
}

}  // namespace superweight::client
