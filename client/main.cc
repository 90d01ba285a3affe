// superweight: the command-line client. Depends on the contract (proto/) only.
//   superweight --server=HOST:PORT VERB [flags]
// Verbs: health, info, models, locate, score, ablate, quantize, check, jobs, watch, cancel.
// --zero=LAYER,ROW,COL and --set=LAYER,ROW,COL,VALUE (repeatable) edit down_proj weights for score.
// Exit codes: 0 done, 1 the server refused or failed (its status is printed) or a watched job
// ended FAILED or CANCELLED, 2 usage (a bad or contradictory flag, a file a flag names that
// cannot be read or written), 3 an expectation did not hold (--expect; check: the super weights
// or perplexity not kept), 130 interrupted (SIGINT or SIGTERM; a job the client waits on is
// cancelled first).
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "absl/algorithm/container.h"
#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/command_line.h"
#include "engine/util/build_info.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "superweight/v1/superweight.grpc.pb.h"

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
          "write the one setting under the server's --export_root: gguf:TYPE (Q4_0, "
          "Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16, F32), hf or hf:f32");
ABSL_FLAG(std::string, export_name, "", "the export's file or directory name");
ABSL_FLAG(std::string, reference, "", "the model --model was quantized from");
ABSL_FLAG(double, max_ppl_ratio, 0, "perplexity ratio allowed (default 1.1)");
ABSL_FLAG(double, max_rel_error, 0, "relative error allowed per super weight (0.05)");
ABSL_FLAG(double, min_activation_ratio, 0,
          "share of the super activation that must remain (default 0.5)");
ABSL_FLAG(std::string, super_weight_tensor_type, "",
          "gguf export: the type of the down_proj holding a super weight (F16, Q8_0)");
ABSL_FLAG(std::string, token_file, "", "file with the bearer token");
ABSL_FLAG(std::string, ca_cert, "", "PEM root certificate: connect with TLS");
ABSL_FLAG(double, timeout, 600, "seconds before the call is abandoned");

namespace v1 = superweight::v1;

namespace {

int Usage(const std::string& msg) {
  std::cerr << "superweight: " << msg << "\n";
  return 2;
}

// The file a flag names, or an error naming the flag.
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  if (f) ss << f.rdbuf();
  if (!f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot read --%s %s: %s", flag, path, std::strerror(errno)));
  }
  return ss.str();
}

// Checked before a job runs, so that a long job does not end with its plot unwritable.
absl::Status CheckWritable(absl::string_view flag, const std::string& path) {
  struct stat st;
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists ? (S_ISDIR(st.st_mode) || ::access(path.c_str(), W_OK) != 0)
             : ::access(dir.c_str(), W_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot write --%s %s: %s", flag, path,
                        exists && S_ISDIR(st.st_mode) ? "a directory" : std::strerror(errno)));
  }
  return absl::OkStatus();
}

int Failed(const grpc::Status& s) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int code = s.error_code();
  std::cerr << "superweight: " << (code >= 0 && code <= 16 ? kNames[code] : "?") << ": "
            << s.error_message() << "\n";
  return 1;
}

// One JSON document per call: pretty, or (one_line) a compact line for JSON Lines streams.
void PrintJson(const google::protobuf::Message& m, bool one_line = false) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.add_whitespace = !one_line;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  std::cout << out << "\n" << std::flush;
}

// The job this client waits on while following it (a terminal's progress bar), which an
// interrupt cancels: the server would otherwise run it for nobody. Waiting in a unary call needs
// nothing: the call ends with the process, and the server cancels its job.
struct FollowedJob {
  std::mutex mu;
  std::string id;
  bool interrupted = false;  // the interrupt's thread is cancelling it, then exits 130
};
FollowedJob& Followed() {
  static FollowedJob* followed = new FollowedJob;
  return *followed;
}

// SIGINT and SIGTERM, blocked in every thread (main blocks them before gRPC starts any), are
// taken here: the followed job is cancelled, then the client exits 130.
void WatchForInterrupts(sigset_t signals, v1::SuperWeightService::Stub* stub, std::string token) {
  std::thread([signals, stub, token] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::string id;
    {
      std::lock_guard<std::mutex> lock(Followed().mu);
      id = Followed().id;
      Followed().interrupted = true;
    }
    if (!id.empty()) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
      v1::CancelJobRequest req;
      req.set_job_id(id);
      v1::Job job;
      const grpc::Status s = stub->CancelJob(&ctx, req, &job);
      std::cerr << "\nsuperweight: interrupted; job " << id
                << (s.ok() ? " cancelled" : " could not be cancelled: " + s.error_message())
                << "\n";
    }
    std::_Exit(130);
  }).detach();
}

absl::Status FillInput(v1::Input* input) {
  if (!absl::GetFlag(FLAGS_token_ids).empty()) {
    for (absl::string_view p :
         absl::StrSplit(absl::GetFlag(FLAGS_token_ids), ',', absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(p, &id)) {
        return absl::InvalidArgumentError("--token_ids wants comma-separated integers");
      }
      input->mutable_token_ids()->add_ids(id);
    }
    if (input->token_ids().ids().empty()) {
      return absl::InvalidArgumentError("--token_ids wants comma-separated integers");
    }
  } else if (!absl::GetFlag(FLAGS_text_file).empty()) {
    absl::StatusOr<std::string> text = ReadFlagFile("text_file", absl::GetFlag(FLAGS_text_file));
    if (!text.ok()) return text.status();
    input->set_text(*std::move(text));
  } else if (!absl::GetFlag(FLAGS_text).empty()) {
    input->set_text(absl::GetFlag(FLAGS_text));
  }
  return absl::OkStatus();
}

// LAYER,ROW,COL into `out`; false when it is not three integers.
// LAYER or LAYER:EXPERT (an expert of a mixture-of-experts layer).
bool ParseLayer(absl::string_view text, int32_t* layer, std::optional<int32_t>* expert) {
  const std::vector<absl::string_view> p = absl::StrSplit(text, ':');
  int32_t e = 0;
  if (p.empty() || p.size() > 2 || !absl::SimpleAtoi(p[0], layer) ||
      (p.size() == 2 && (!absl::SimpleAtoi(p[1], &e) || e < 0))) {
    return false;
  }
  if (p.size() == 2) *expert = e;
  return true;
}

// LAYER[:EXPERT],ROW,COL.
bool ParseCoordinate(const std::string& text, v1::Coordinate* out) {
  std::vector<std::string> p = absl::StrSplit(text, ',');
  int32_t layer;
  std::optional<int32_t> expert;
  int64_t row, col;
  if (p.size() != 3 || !ParseLayer(p[0], &layer, &expert) || !absl::SimpleAtoi(p[1], &row) ||
      !absl::SimpleAtoi(p[2], &col)) {
    return false;
  }
  out->set_layer(layer);
  out->set_row(row);
  out->set_col(col);
  if (expert.has_value()) out->set_expert(*expert);
  return true;
}

// As the engine names it: layers[L].mlp.down_proj.weight[R, C], or with experts[E] before
// down_proj.
std::string CoordinateName(const v1::Coordinate& c) {
  return c.has_expert() ? absl::StrFormat("layers[%d].mlp.experts[%d].down_proj.weight[%d, %d]",
                                          c.layer(), c.expert(), c.row(), c.col())
                        : absl::StrFormat("layers[%d].mlp.down_proj.weight[%d, %d]", c.layer(),
                                          c.row(), c.col());
}

// LAYER or LAYER:EXPERT as the tables print it.
std::string LayerName(const v1::Coordinate& c) {
  return c.has_expert() ? absl::StrFormat("%d:%d", c.layer(), c.expert()) : absl::StrCat(c.layer());
}

// A table: one row per setting, one column per metric (in the order first seen), perplexities
// first and the average last.
template <typename Rows>
void PrintRows(const Rows& rows) {
  std::vector<std::string> columns;
  for (const auto& row : rows) {
    std::vector<std::string> names;
    for (const auto& [name, value] : row.metrics()) names.push_back(name);
    std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
      auto rank = [](const std::string& n) {
        return n.rfind("average", 0) == 0 ? 2 : n.find("perplexity") != std::string::npos ? 0 : 1;
      };
      return std::make_pair(rank(a), a) < std::make_pair(rank(b), b);
    });
    for (const std::string& n : names) {
      if (std::find(columns.begin(), columns.end(), n) == columns.end()) columns.push_back(n);
    }
  }
  std::cout << absl::StrFormat("%-24s", "setting");
  for (const std::string& c : columns) std::cout << " " << c;
  std::cout << "\n";
  for (const auto& row : rows) {
    std::cout << absl::StrFormat("%-24s", row.setting());
    for (const std::string& c : columns) {
      auto it = row.metrics().find(c);
      const std::string cell =
          it == row.metrics().end() ? "-" : absl::StrFormat("%.4g", it->second);
      std::cout << " " << std::string(c.size() > cell.size() ? c.size() - cell.size() : 0, ' ')
                << cell;
    }
    std::cout << "\n";
  }
}

template <typename Result>
void PrintSuperWeights(const std::string& job_id, const Result& r) {
  std::cout << "job " << job_id << ": super weights";
  for (const auto& c : r.super_weights()) std::cout << " " << CoordinateName(c);
  std::cout << " (" << r.super_weights_source() << ")\n";
}

void PrintAblate(const v1::AblateResponse& resp) {
  const v1::AblateResult& r = resp.result();
  PrintSuperWeights(resp.job_id(), r);
  PrintRows(r.rows());
  if (r.token_probabilities_size() > 0) {
    std::cout << absl::StrFormat("\nnext-token probability over %d LAMBADA contexts\n",
                                 r.token_prob_contexts());
    std::cout << absl::StrFormat("%-8s %12s %12s %8s\n", "token", "intact", "SW pruned", "ratio");
    for (const auto& t : r.token_probabilities()) {
      std::cout << absl::StrFormat("%-8s %12.4g %12.4g %7.2fx\n", " '" + t.token() + "' ",
                                   t.intact(), t.pruned(),
                                   t.intact() > 0 ? t.pruned() / t.intact() : 0.0);
    }
  }
}

struct Series {
  std::string name;
  std::string color;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in x order
};

// A line chart as SVG, y from 0; x ticks where `tick_label` names them. False when the file
// cannot be written.
bool PlotLines(const std::string& path, const std::string& title, const std::string& x_label,
               std::vector<Series> series,
               const std::vector<std::pair<double, std::string>>& x_ticks) {
  const double w = 560, h = 360, left = 60, right = 20, top = 30, bottom = 45;
  double min_x = 1e300, max_x = -1e300, max_y = 1e-9;
  for (Series& s : series) {
    std::sort(s.points.begin(), s.points.end());
    for (const auto& [x, y] : s.points) {
      min_x = std::min(min_x, x);
      max_x = std::max(max_x, x);
      max_y = std::max(max_y, y);
    }
  }
  if (min_x > max_x) min_x = max_x = 0;
  if (max_x == min_x) max_x = min_x + 1;
  auto px = [&](double x) { return left + (w - left - right) * (x - min_x) / (max_x - min_x); };
  auto py = [&](double y) { return top + (h - top - bottom) * (1 - y / (1.1 * max_y)); };
  std::ofstream f(path);
  if (!f) return false;
  f << absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif' "
      "font-size='11'>\n<rect width='100%%' height='100%%' fill='white'/>\n"
      "<text x='%.0f' y='18' font-size='13'>%s</text>\n",
      w, h, left, title);
  f << absl::StrFormat("<line x1='%.0f' x2='%.0f' y1='%.1f' y2='%.1f' stroke='black'/>\n", left,
                       w - right, py(0), py(0));
  f << absl::StrFormat("<line x1='%.0f' x2='%.0f' y1='%.1f' y2='%.1f' stroke='black'/>\n", left,
                       left, py(0), top);
  f << absl::StrFormat("<text x='%.0f' y='%.0f'>%s</text>\n", w / 2, h - 8, x_label);
  for (const auto& [x, label] : x_ticks) {
    f << absl::StrFormat("<text x='%.1f' y='%.1f'>%s</text>\n", px(x) - 6, py(0) + 14, label);
  }
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    std::string line;
    for (const auto& [x, y] : s.points) {
      f << absl::StrFormat("<circle cx='%.1f' cy='%.1f' r='3' fill='%s'/>\n", px(x), py(y),
                           s.color);
      line += absl::StrFormat("%s%.1f,%.1f", line.empty() ? "" : " ", px(x), py(y));
    }
    f << "<polyline fill='none' stroke='" << s.color << "' points='" << line << "'/>\n";
    if (series.size() > 1) {
      f << absl::StrFormat("<text x='%.0f' y='%.0f' fill='%s'>%s</text>\n", w - 160,
                           top + 14 * (i + 1), s.color, s.name);
    }
  }
  for (int i = 0; i <= 4; ++i) {
    const double y = 1.1 * max_y * i / 4;
    f << absl::StrFormat("<text x='8' y='%.1f'>%.3g</text>\n", py(y) + 4, y);
  }
  f << "</svg>\n";
  return static_cast<bool>(f);
}

// Average zero-shot accuracy against the super weights' scale (the scale rows and, at 1, the
// intact one), as the paper's Figure 6.
bool PlotAblation(const v1::AblateResult& r, const std::string& path) {
  Series s{"average accuracy", "#c33", {}};
  std::vector<std::pair<double, std::string>> ticks;
  for (const auto& row : r.rows()) {
    auto acc = row.metrics().find("average/acc");
    if (acc == row.metrics().end()) continue;
    double scale;
    if (row.setting() == "intact") {
      scale = 1;
    } else if (row.setting().rfind("scale SW x", 0) == 0 &&
               absl::SimpleAtod(row.setting().substr(10), &scale)) {
    } else {
      continue;
    }
    s.points.push_back({scale, acc->second});
    ticks.push_back({scale, absl::StrFormat("%.3g", scale)});
  }
  return PlotLines(path, "average zero-shot accuracy against the super weights' scale", "scale",
                   {s}, ticks);
}

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

// False when the file cannot be written.
bool PlotProfile(const v1::LocateResult& r, const std::string& path) {
  // Per-layer max |down_proj output| (bars, log scale) before and after removing what was found,
  // in the manner of the paper's Figure 3.
  const int n = r.profile_before_size();
  const double w = 720, h = 360, left = 60, bottom = 40, top = 30;
  double max_log = 1;
  for (const auto& a : r.profile_before())
    max_log = std::max(max_log, std::log10(1.0 + a.output_max_abs()));
  std::ofstream f(path);
  if (!f) return false;
  f << absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif' "
      "font-size='11'>\n",
      w, h);
  f << "<rect width='100%' height='100%' fill='white'/>\n";
  f << absl::StrFormat(
      "<text x='%.0f' y='18' font-size='13'>max |down_proj output| per layer (log scale)</text>\n",
      left);
  const double plot_w = w - left - 20, plot_h = h - top - bottom, bar = plot_w / std::max(1, n);
  auto y_of = [&](double v) { return top + plot_h - plot_h * std::log10(1 + v) / max_log; };
  for (int d = 0; d <= static_cast<int>(max_log); ++d) {
    const double y = top + plot_h - plot_h * d / max_log;
    f << absl::StrFormat(
        "<line x1='%.0f' x2='%.0f' y1='%.1f' y2='%.1f' stroke='#ddd'/><text x='8' "
        "y='%.1f'>1e%d</text>\n",
        left, w - 20, y, y, y + 4, d);
  }
  for (int i = 0; i < n; ++i) {
    const double x = left + i * bar;
    const double before = r.profile_before(i).output_max_abs();
    const double after = i < r.profile_after_size() ? r.profile_after(i).output_max_abs() : 0;
    f << absl::StrFormat(
        "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='#d9534f'><title>layer %d: "
        "%.4g</title></rect>\n",
        x + 1, y_of(before), bar * 0.45, top + plot_h - y_of(before), i, before);
    f << absl::StrFormat(
        "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='#5b8def'><title>layer %d after: "
        "%.4g</title></rect>\n",
        x + 1 + bar * 0.45, y_of(after), bar * 0.45, top + plot_h - y_of(after), i, after);
    if (n <= 40 || i % 5 == 0)
      f << absl::StrFormat("<text x='%.1f' y='%.0f'>%d</text>\n", x + 1, h - bottom + 14, i);
  }
  f << absl::StrFormat("<text x='%.0f' y='%.0f'>layer</text>\n", left + plot_w / 2, h - 8);
  f << absl::StrFormat(
      "<rect x='%.0f' y='24' width='10' height='10' fill='#d9534f'/><text x='%.0f' "
      "y='33'>intact</text>",
      w - 200, w - 186);
  f << absl::StrFormat(
      "<rect x='%.0f' y='24' width='10' height='10' fill='#5b8def'/><text x='%.0f' y='33'>super "
      "weights zeroed</text>\n</svg>\n",
      w - 140, w - 126);
  return static_cast<bool>(f);
}

void PrintLocate(const v1::LocateResponse& resp) {
  const v1::LocateResult& r = resp.result();
  std::cout << absl::StrFormat("job %s: %s\n", resp.job_id(), r.summary());
  if (!r.known_model().empty()) std::cout << "recognised as " << r.known_model() << "\n";
  if (r.super_weights_size() > 0) {
    std::cout << absl::StrFormat("%-5s %-6s %-6s %-6s %-11s %-11s %-11s %-5s %-10s %s\n", "iter",
                                 "layer", "row", "col", "weight", "input act", "output act",
                                 "token", "confirmed", "ppl zeroed");
  }
  for (const auto& s : r.super_weights()) {
    std::cout << absl::StrFormat(
        "%-5d %-6s %-6d %-6d %-11.4g %-11.4g %-11.4g %-5d %-10s %.4g%s\n", s.iteration(),
        LayerName(s.coordinate()), s.coordinate().row(), s.coordinate().col(), s.weight(),
        s.input_activation(), s.output_activation(), s.token(), s.confirmed() ? "yes" : "no",
        s.perplexity_zeroed(), s.known_match().empty() ? "" : "  (published)");
  }
  for (const auto& e : r.super_experts()) {
    std::cout << absl::StrFormat("super expert %d:%d: largest down_proj output %.4g\n", e.layer(),
                                 e.expert(), e.output_max_abs());
  }
  if (r.perplexity_intact() > 0)
    std::cout << absl::StrFormat("perplexity of the confirmation text, intact: %.4g\n",
                                 r.perplexity_intact());
}

std::string JobLine(const v1::Job& j) {
  // Where replicas share a store: which ran it, and how many tries it took past one.
  std::string where;
  if (!j.replica().empty()) where = "  on " + j.replica();
  if (j.attempts() > 1) where += absl::StrFormat(" (attempt %d)", j.attempts());
  return absl::StrFormat("%s  %-7s %-10s %3.0f%%  %s%s%s", j.id(), j.kind(),
                         v1::Job::State_Name(j.state()), 100 * j.progress(), j.model(), where,
                         j.error_message().empty() ? "" : "  (" + j.error_message() + ")");
}

// Follows a job with a progress bar on stderr (a terminal) until it ends; returns it.
grpc::Status FollowJob(v1::SuperWeightService::Stub* stub, const std::string& token,
                       const std::string& id, double timeout_s, v1::Job* job) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::WatchJobRequest req;
  req.set_job_id(id);
  auto reader = stub->WatchJob(&ctx, req);
  while (reader->Read(job)) {
    const int filled = static_cast<int>(30 * job->progress());
    std::cerr << "\r"
              << absl::StrFormat("%s [%s%s] %3.0f%% %-9s", job->id(), std::string(filled, '#'),
                                 std::string(30 - filled, ' '), 100 * job->progress(),
                                 v1::Job::State_Name(job->state()))
              << std::flush;
  }
  std::cerr << "\r" << std::string(60, ' ') << "\r" << std::flush;
  grpc::Status s = reader->Finish();
  if (!s.ok()) return s;
  if (job->state() != v1::Job::SUCCEEDED) {
    return grpc::Status(static_cast<grpc::StatusCode>(job->error_code() ? job->error_code() : 1),
                        job->error_message());
  }
  return grpc::Status::OK;
}

const std::vector<std::string> kVerbs = {"health",   "info",  "models", "locate", "score", "ablate",
                                         "quantize", "check", "jobs",   "watch",  "cancel"};

// A group of flags in --help and the verbs that read them: a flag given to a verb that reads it
// in no group is refused rather than ignored.
struct FlagGroup {
  std::string title;  // a verb's own group is titled "VERB: what it does"
  std::vector<std::string> verbs;
  std::vector<std::string> flags;
};

const std::vector<FlagGroup>& FlagGroups() {
  static const auto* groups = new std::vector<FlagGroup>{
      {"Every verb:", kVerbs, {"server", "token_file", "ca_cert", "timeout"}},
      {"Every verb but health:",
       {"info", "models", "locate", "score", "ablate", "quantize", "check", "jobs", "watch",
        "cancel"},
       {"json"}},
      {"Jobs (locate, score, ablate, quantize, check):",
       {"locate", "score", "ablate", "quantize", "check"},
       {"model", "bf16", "no_wait", "request_id"}},
      {"Input (locate, score), one of:", {"locate", "score"}, {"text", "text_file", "token_ids"}},
      {"Evaluation windows (score, ablate, quantize, check):",
       {"score", "ablate", "quantize", "check"},
       {"window", "max_windows"}},
      {"Evaluation tasks (ablate, quantize):", {"ablate", "quantize"}, {"tasks", "max_examples"}},
      {"Super weights given instead of located (ablate, quantize, check):",
       {"ablate", "quantize", "check"},
       {"super_weights"}},
      {"Plots (locate, ablate, quantize):", {"locate", "ablate", "quantize"}, {"plot"}},
      {"health: whether the server is serving (gRPC health checking; needs no token)",
       {"health"},
       {}},
      {"info: the server's build (version, git revision, CPU class) and job store", {"info"}, {}},
      {"models: the models under the server's --model_root", {"models"}, {}},
      {"locate: the super weights of --model, found by their activation spikes and confirmed",
       {"locate"},
       {"threshold", "skip_confirmation", "expect"}},
      {"score: perplexity of the input, with weights zeroed or set", {"score"}, {"zero", "set"}},
      {"ablate: zero-shot accuracy and perplexity with the super weights pruned, scaled, ...",
       {"ablate"},
       {"settings", "scales", "outlier_fraction", "token_prob_contexts", "prune_experts"}},
      {"quantize: round-to-nearest quantization, plain and super-weight-aware; an export",
       {"quantize"},
       {"bits", "block_size", "clip", "clip_value", "aware", "restore", "keep_super_experts",
        "activations_int8", "activations_hold_largest", "export", "export_name",
        "super_weight_tensor_type"}},
      {"check: whether quantized --model keeps the super weights of --reference",
       {"check"},
       {"reference", "max_ppl_ratio", "max_rel_error", "min_activation_ratio"}},
      {"jobs: the server's jobs (--model: only that model's)", {"jobs"}, {"model"}},
      {"watch: a job's progress until it ends", {"watch"}, {"job"}},
      {"cancel: stop a job", {"cancel"}, {"job"}},
  };
  return *groups;
}

// The repeatable flags, taken by the command line itself (their values hold commas).
const std::map<std::string, std::string> kRepeatedFlagHelp = {
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

std::string GroupFlagHelp(const std::string& flag) {
  auto repeated = kRepeatedFlagHelp.find(flag);
  return repeated != kRepeatedFlagHelp.end() ? superweight::cli::FlagHelp(flag, repeated->second)
                                             : superweight::cli::FlagHelp(flag);
}

// The flags, grouped by verb; only `verb`'s groups when one is given.
void PrintHelp(const std::string& verb) {
  std::cout << "usage: superweight [--server=HOST:PORT] {" << absl::StrJoin(kVerbs, "|")
            << "} [flags]\n       superweight --version\n";
  std::set<std::string> listed;
  for (const FlagGroup& g : FlagGroups()) {
    if (!verb.empty() && std::find(g.verbs.begin(), g.verbs.end(), verb) == g.verbs.end()) {
      continue;
    }
    std::cout << "\n" << g.title << "\n";
    for (const std::string& flag : g.flags) {
      std::cout << GroupFlagHelp(flag);
      listed.insert(flag);
    }
  }
  if (verb.empty()) {
    bool header = false;  // a flag added to the file but to no group still shows
    for (const std::string& flag : superweight::cli::FlagsDefinedIn("client/main.cc")) {
      if (listed.count(flag)) continue;
      if (!header) std::cout << "\nOther:\n";
      header = true;
      std::cout << GroupFlagHelp(flag);
    }
  }
  std::cout << "\nExit codes: 0 done; 1 the server refused or failed the call (its status on "
               "stderr), or a watched job ended FAILED or CANCELLED; 2 usage: a bad or "
               "contradictory flag, a file a flag names that cannot be read or written; 3 locate's "
               "--expect or check did not hold.\n";
}

// The verbs that read `flag`; empty when no group lists it (then every verb may take it).
std::vector<std::string> VerbsReading(const std::string& flag) {
  std::vector<std::string> verbs;
  for (const FlagGroup& g : FlagGroups()) {
    if (std::find(g.flags.begin(), g.flags.end(), flag) == g.flags.end()) continue;
    for (const std::string& v : g.verbs) {
      if (std::find(verbs.begin(), verbs.end(), v) == verbs.end()) verbs.push_back(v);
    }
  }
  return verbs;
}

// Flags that do nothing for `verb`, or contradict each other: refused, never ignored.
absl::Status CheckFlagsFit(const std::string& verb, const std::set<std::string>& given) {
  auto error = [](auto... args) { return absl::InvalidArgumentError(absl::StrFormat(args...)); };
  for (const std::string& flag : given) {
    const std::vector<std::string> verbs = VerbsReading(flag);
    if (!verbs.empty() && std::find(verbs.begin(), verbs.end(), verb) == verbs.end()) {
      return error("--%s does not apply to %s (only to %s)", flag, verb,
                   absl::StrJoin(verbs, ", "));
    }
  }
  auto has = [&](const char* flag) { return given.count(flag) > 0; };
  if (has("text") + has("text_file") + has("token_ids") > 1) {
    return error("give one of --text, --text_file, --token_ids");
  }
  if (verb == "score" && has("max_windows") && absl::GetFlag(FLAGS_window) == 0) {
    return error("--max_windows needs --window: without it the input is scored as one sequence");
  }
  if (has("no_wait") && absl::GetFlag(FLAGS_no_wait)) {
    for (const char* flag : {"expect", "plot"}) {
      if (has(flag)) return error("--%s needs the result, and --no_wait returns before it", flag);
    }
  }
  if (has("expect") && absl::GetFlag(FLAGS_skip_confirmation)) {
    return error("--expect counts confirmed super weights, and --skip_confirmation confirms none");
  }
  if (verb == "quantize") {
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
  }
  if (verb == "ablate" && has("settings")) {
    const std::vector<std::string> settings =
        absl::StrSplit(absl::GetFlag(FLAGS_settings), ',', absl::SkipEmpty());
    for (const auto& [flag, setting] : {std::pair<const char*, const char*>{"scales", "scale"},
                                        {"outlier_fraction", "outliers"},
                                        {"token_prob_contexts", "token_probs"}}) {
      if (has(flag) && std::find(settings.begin(), settings.end(), setting) == settings.end()) {
        return error("--%s is for the %s setting, not in --settings", flag, setting);
      }
    }
  }
  return absl::OkStatus();
}
}  // namespace

int main(int argc, char** argv) {
  // Before anything can start a thread (gRPC starts its own): every thread inherits the mask,
  // and only WatchForInterrupts' thread takes the signals.
  sigset_t interrupts;
  sigemptyset(&interrupts);
  sigaddset(&interrupts, SIGINT);
  sigaddset(&interrupts, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &interrupts, nullptr);
  std::vector<std::string> zeros, sets, super_weights, prune_experts;
  absl::StatusOr<superweight::cli::CommandLine> command_line =
      superweight::cli::Parse(argc, argv,
                              {{"zero", &zeros},
                               {"set", &sets},
                               {"super_weights", &super_weights},
                               {"prune_experts", &prune_experts}});
  if (!command_line.ok()) return Usage(std::string(command_line.status().message()));
  if (command_line->help) {
    const std::vector<std::string>& p = command_line->positional;
    PrintHelp(p.size() == 1 && absl::c_linear_search(kVerbs, p[0]) ? p[0] : "");
    return 0;
  }
  if (command_line->version) {
    std::cout << superweight::VersionLine("superweight") << "\n";
    return 0;
  }
  if (command_line->positional.size() != 1) {
    return Usage("give exactly one verb: " + absl::StrJoin(kVerbs, ", ") + " (--help lists them)");
  }
  const std::string verb = command_line->positional[0];
  if (!absl::c_linear_search(kVerbs, verb)) return Usage("unknown verb " + verb);
  if (absl::Status s = CheckFlagsFit(verb, command_line->given); !s.ok()) {
    return Usage(std::string(s.message()));
  }
  const std::string plot = absl::GetFlag(FLAGS_plot);
  if (!plot.empty()) {
    if (absl::Status s = CheckWritable("plot", plot); !s.ok())
      return Usage(std::string(s.message()));
  }

  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!absl::GetFlag(FLAGS_ca_cert).empty()) {
    absl::StatusOr<std::string> pem = ReadFlagFile("ca_cert", absl::GetFlag(FLAGS_ca_cert));
    if (!pem.ok()) return Usage(std::string(pem.status().message()));
    // grpc takes an empty or garbled root set for "the system's roots", and then reports only
    // a failed handshake.
    if (!absl::StrContains(*pem, "-----BEGIN CERTIFICATE-----")) {
      return Usage("--ca_cert " + absl::GetFlag(FLAGS_ca_cert) + " holds no PEM certificate");
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *std::move(pem);
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  auto stub = v1::SuperWeightService::NewStub(
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), creds, channel_args));
  grpc::ClientContext ctx;
  ctx.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_timeout) * 1000)));
  std::string token;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    absl::StatusOr<std::string> file = ReadFlagFile("token_file", absl::GetFlag(FLAGS_token_file));
    if (!file.ok()) return Usage(std::string(file.status().message()));
    token = std::string(absl::StripAsciiWhitespace(*file));
    if (token.empty())
      return Usage("--token_file " + absl::GetFlag(FLAGS_token_file) + " is empty");
    ctx.AddMetadata("authorization", "Bearer " + token);
  }
  WatchForInterrupts(interrupts, stub.get(), token);
  const bool json = absl::GetFlag(FLAGS_json);
  // On a terminal, long jobs are submitted without waiting and followed with a progress bar.
  const bool no_wait = absl::GetFlag(FLAGS_no_wait);
  const bool progress = ::isatty(2) && !json && !no_wait;
  const v1::Precision precision =
      absl::GetFlag(FLAGS_bf16) ? v1::PRECISION_BF16 : v1::PRECISION_F32;

  // A job-backed call (locate, score): waits for the answer, or on a terminal submits and
  // follows the job with a progress bar, or with --no_wait prints the job id. Returns the exit
  // code, or -1 when `resp` holds a result to print.
  auto run_job = [&](auto call, auto& req, auto& resp, auto result_of) -> int {
    req.set_async(progress || no_wait);
    req.set_request_id(absl::GetFlag(FLAGS_request_id));
    grpc::Status s = call(req);
    if (!s.ok()) return Failed(s);
    if (no_wait) {
      if (json) {
        PrintJson(resp);  // {"job_id": ...}: the response holds no result yet
      } else {
        std::cout << resp.job_id() << "\n";
      }
      return 0;
    }
    if (progress) {
      v1::Job job;
      {
        std::lock_guard<std::mutex> lock(Followed().mu);
        Followed().id = resp.job_id();
      }
      s = FollowJob(stub.get(), token, resp.job_id(), absl::GetFlag(FLAGS_timeout), &job);
      // Ended by the interrupt's own cancel: its thread reports and exits, not this one.
      while (true) {
        std::unique_lock<std::mutex> lock(Followed().mu);
        if (!Followed().interrupted) {
          Followed().id.clear();
          break;
        }
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (!s.ok()) return Failed(s);
      *resp.mutable_result() = result_of(job);
    }
    return -1;
  };
  if (verb == "health") {
    // grpc.health.v1.Health/Check for the whole server, which needs no token. The request
    // (service "") encodes as zero bytes; the response's only field is status (1: SERVING).
    grpc::GenericStub generic(
        grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), creds, channel_args));
    grpc::ByteBuffer request, response;
    grpc::Slice empty("");
    request = grpc::ByteBuffer(&empty, 1);
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                      &response, [&](grpc::Status s) {
                        std::lock_guard<std::mutex> lock(mu);
                        status = s;
                        done = true;
                        cv.notify_one();
                      });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    if (!status.ok()) return Failed(status);
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (response.Dump(&slices).ok()) {
      for (const auto& sl : slices)
        bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
    const bool serving = bytes.size() == 2 && bytes[0] == 0x08 && bytes[1] == 0x01;
    std::cout << (serving ? "SERVING" : "NOT_SERVING") << "\n";
    return serving ? 0 : 1;
  }
  if (verb == "info") {
    v1::ServerInfo info;
    grpc::Status s = stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info);
    if (!s.ok()) return Failed(s);
    if (json) {
      PrintJson(info);
      return 0;
    }
    std::cout << absl::StrFormat("superweightd %s (git %s), CPU class %s", info.version(),
                                 info.git_revision(), info.cpu_class());
    if (info.cpu_class() != info.cpu_class_detected()) {
      std::cout << " (capped; the CPU's is " << info.cpu_class_detected() << ")";
    }
    std::cout << ", job store " << info.job_store();
    if (!info.replica().empty()) std::cout << " (replica " << info.replica() << ")";
    std::cout << "\n";
    return 0;
  }
  if (verb == "models") {
    v1::ListModelsResponse resp;
    grpc::Status s = stub->ListModels(&ctx, v1::ListModelsRequest(), &resp);
    if (!s.ok()) return Failed(s);
    if (json) {
      PrintJson(resp);
      return 0;
    }
    for (const auto& m : resp.models()) {
      std::cout << absl::StrFormat(
          "%-45s %-12s %-8s %3d layers  hidden %-5d down_proj %-5s %8.1f MB\n", m.name(),
          m.format(), m.architecture(), m.layers(), m.hidden_size(), m.weight_dtype(),
          m.mapped_bytes() / 1048576.0);
    }
    return 0;
  }
  if (verb == "locate") {
    v1::LocateRequest req;
    req.set_model(absl::GetFlag(FLAGS_model));
    if (absl::Status in = FillInput(req.mutable_input()); !in.ok()) {
      return Usage(std::string(in.message()));
    }
    req.set_threshold(absl::GetFlag(FLAGS_threshold));
    req.set_precision(precision);
    req.set_skip_confirmation(absl::GetFlag(FLAGS_skip_confirmation));
    v1::LocateResponse resp;
    const int rc = run_job([&](v1::LocateRequest& q) { return stub->Locate(&ctx, q, &resp); }, req,
                           resp, [](const v1::Job& job) { return job.locate(); });
    if (rc >= 0) return rc;
    if (json) {
      PrintJson(resp);
    } else {
      PrintLocate(resp);
    }
    if (!plot.empty() && !PlotProfile(resp.result(), plot)) {
      return Usage("cannot write --plot " + plot);
    }
    const int expect = absl::GetFlag(FLAGS_expect);
    if (expect >= 0) {
      int confirmed = 0;
      for (const auto& sw : resp.result().super_weights()) confirmed += sw.confirmed();
      if (confirmed != expect) {
        std::cerr << absl::StrFormat("superweight: expected %d super weights, found %d\n", expect,
                                     confirmed);
        return 3;
      }
    }
    return 0;
  }
  if (verb == "score") {
    v1::ScoreRequest req;
    req.set_model(absl::GetFlag(FLAGS_model));
    if (absl::Status in = FillInput(req.mutable_input()); !in.ok()) {
      return Usage(std::string(in.message()));
    }
    for (const std::string& z : zeros) {
      v1::WeightEdit* e = req.mutable_edits()->add_weights();
      if (!ParseCoordinate(z, e->mutable_coordinate()))
        return Usage("--zero wants LAYER[:EXPERT],ROW,COL");
      e->set_value(0.f);
    }
    for (const std::string& edit : sets) {
      // The value is the server's to judge (it refuses what is not finite).
      const size_t comma = edit.rfind(',');
      float value = 0;
      v1::WeightEdit* e = req.mutable_edits()->add_weights();
      if (comma == std::string::npos ||
          !ParseCoordinate(edit.substr(0, comma), e->mutable_coordinate()) ||
          !absl::SimpleAtof(edit.substr(comma + 1), &value)) {
        return Usage("--set wants LAYER[:EXPERT],ROW,COL,VALUE");
      }
      e->set_value(value);
    }
    req.set_precision(precision);
    req.set_window(absl::GetFlag(FLAGS_window));
    req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
    v1::ScoreResponse resp;
    const int rc = run_job([&](v1::ScoreRequest& q) { return stub->Score(&ctx, q, &resp); }, req,
                           resp, [](const v1::Job& job) { return job.score(); });
    if (rc >= 0) return rc;
    if (json) {
      PrintJson(resp);
    } else {
      std::cout << absl::StrFormat("job %s: perplexity %.6g over %d tokens (mean NLL %.6g)\n",
                                   resp.job_id(), resp.result().perplexity(),
                                   resp.result().tokens_scored(), resp.result().mean_nll());
    }
    return 0;
  }
  if (verb == "ablate") {
    v1::AblateRequest req;
    req.set_model(absl::GetFlag(FLAGS_model));
    for (absl::string_view v :
         absl::StrSplit(absl::GetFlag(FLAGS_settings), ',', absl::SkipEmpty()))
      req.add_settings(std::string(v));
    for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipEmpty()))
      req.add_tasks(std::string(v));
    for (absl::string_view v :
         absl::StrSplit(absl::GetFlag(FLAGS_scales), ',', absl::SkipEmpty())) {
      float scale;
      if (!absl::SimpleAtof(v, &scale) || !std::isfinite(scale)) {
        return Usage("--scales wants comma-separated numbers");
      }
      req.add_scales(scale);
    }
    for (const std::string& c : super_weights) {
      if (!ParseCoordinate(c, req.add_super_weights())) {
        return Usage("--super_weights wants LAYER[:EXPERT],ROW,COL");
      }
    }
    for (const std::string& e : prune_experts) {
      int32_t layer;
      std::optional<int32_t> expert;
      if (!ParseLayer(e, &layer, &expert) || !expert.has_value()) {
        return Usage("--prune_experts wants LAYER:EXPERT");
      }
      v1::ExpertRef* ref = req.add_prune_experts();
      ref->set_layer(layer);
      ref->set_expert(*expert);
    }
    req.set_max_examples(absl::GetFlag(FLAGS_max_examples));
    req.set_outlier_fraction(absl::GetFlag(FLAGS_outlier_fraction));
    req.set_token_prob_contexts(absl::GetFlag(FLAGS_token_prob_contexts));
    req.set_window(absl::GetFlag(FLAGS_window));
    req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
    req.set_precision(precision);
    v1::AblateResponse resp;
    const int rc = run_job([&](v1::AblateRequest& q) { return stub->Ablate(&ctx, q, &resp); }, req,
                           resp, [](const v1::Job& job) { return job.ablate(); });
    if (rc >= 0) return rc;
    if (json) {
      PrintJson(resp);
    } else {
      PrintAblate(resp);
    }
    if (!plot.empty() && !PlotAblation(resp.result(), plot)) {
      return Usage("cannot write --plot " + plot);
    }
    return 0;
  }
  if (verb == "quantize") {
    v1::QuantizeRequest req;
    req.set_model(absl::GetFlag(FLAGS_model));
    std::vector<int32_t> bits;
    for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_bits), ',', absl::SkipEmpty())) {
      int32_t b;
      if (!absl::SimpleAtoi(v, &b)) return Usage("--bits wants comma-separated integers");
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
        return Usage("--block_size wants positive integers, 'tensor' or 'row'");
      }
      blocks.push_back(b);
    }
    const std::string clip = absl::GetFlag(FLAGS_clip);
    const bool aware = absl::GetFlag(FLAGS_aware);
    const bool activations_int8 = absl::GetFlag(FLAGS_activations_int8);
    const bool weight_flags = !bits.empty() || !blocks.empty() || !clip.empty() || aware ||
                              absl::GetFlag(FLAGS_restore) ||
                              absl::GetFlag(FLAGS_keep_super_experts);
    if (activations_int8 && !weight_flags) {  // FP and INT8-per-row weights (W8A8)
      req.add_settings()->set_full_precision(true);
      v1::QuantizeSetting* w8 = req.add_settings();
      w8->set_bits(8);
      w8->set_block_size(-1);
    }
    if (weight_flags) {
      if (bits.empty()) bits = {4};
      if (blocks.empty()) blocks = {0, 1048576, 262144, 65536, 16384};
      for (int32_t b : bits) {
        for (int64_t block : blocks) {
          v1::QuantizeSetting* s = req.add_settings();
          s->set_bits(b);
          s->set_block_size(block);
          if (aware) {  // the plain row, then the aware one
            *req.add_settings() = *s;
            s = req.mutable_settings(req.settings_size() - 1);
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
      for (v1::QuantizeSetting plain : req.settings()) {
        plain.set_activation_bits(8);
        ordered.push_back(plain);
        ordered.push_back(plain);
        ordered.back().set_hold_out_super_activations(true);
        if (largest != 0) {
          ordered.push_back(plain);
          ordered.back().set_hold_out_largest_activations(largest);
        }
      }
      req.clear_settings();
      for (const v1::QuantizeSetting& setting : ordered) *req.add_settings() = setting;
    }
    for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipEmpty()))
      req.add_tasks(std::string(v));
    for (const std::string& c : super_weights) {
      if (!ParseCoordinate(c, req.add_super_weights())) {
        return Usage("--super_weights wants LAYER[:EXPERT],ROW,COL");
      }
    }
    req.set_max_examples(absl::GetFlag(FLAGS_max_examples));
    req.set_window(absl::GetFlag(FLAGS_window));
    req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
    req.set_precision(precision);
    req.set_export_format(absl::GetFlag(FLAGS_export));
    req.set_export_name(absl::GetFlag(FLAGS_export_name));
    req.set_super_weight_tensor_type(absl::GetFlag(FLAGS_super_weight_tensor_type));
    v1::QuantizeResponse resp;
    const int rc = run_job([&](v1::QuantizeRequest& q) { return stub->Quantize(&ctx, q, &resp); },
                           req, resp, [](const v1::Job& job) { return job.quantize(); });
    if (rc >= 0) return rc;
    if (json) {
      PrintJson(resp);
    } else {
      PrintSuperWeights(resp.job_id(), resp.result());
      if (resp.result().skipped_settings_size() > 0) {
        std::cout << "no super weight: left out "
                  << absl::StrJoin(resp.result().skipped_settings(), ", ") << "\n";
      }
      PrintRows(resp.result().rows());
      if (resp.result().has_exported()) {
        const v1::ExportedModel& e = resp.result().exported();
        std::cout << absl::StrFormat("exported %s: %s (%d bytes, sha256 %s)%s\n", e.format(),
                                     e.path(), e.bytes(), e.sha256(),
                                     e.model().empty() ? "" : ", served as " + e.model());
      }
    }
    if (!plot.empty() && !PlotQuantization(resp.result(), plot)) {
      return Usage("cannot write --plot " + plot);
    }
    return 0;
  }
  if (verb == "check") {
    if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_reference).empty()) {
      return Usage("check wants --model=QUANTIZED and --reference=ORIGINAL");
    }
    v1::CheckRequest req;
    req.set_model(absl::GetFlag(FLAGS_model));
    req.set_reference(absl::GetFlag(FLAGS_reference));
    for (const std::string& c : super_weights) {
      if (!ParseCoordinate(c, req.add_super_weights())) {
        return Usage("--super_weights wants LAYER[:EXPERT],ROW,COL");
      }
    }
    req.set_max_relative_error(absl::GetFlag(FLAGS_max_rel_error));
    req.set_min_activation_ratio(absl::GetFlag(FLAGS_min_activation_ratio));
    req.set_max_perplexity_ratio(absl::GetFlag(FLAGS_max_ppl_ratio));
    req.set_window(absl::GetFlag(FLAGS_window));
    req.set_max_windows(absl::GetFlag(FLAGS_max_windows));
    req.set_precision(precision);
    v1::CheckResponse resp;
    const int rc = run_job([&](v1::CheckRequest& q) { return stub->Check(&ctx, q, &resp); }, req,
                           resp, [](const v1::Job& job) { return job.check(); });
    if (rc >= 0) return rc;
    const v1::CheckResult& r = resp.result();
    if (json) {
      PrintJson(resp);
    } else {
      std::cout << absl::StrFormat("job %s: %s keeps the super weights of %s (%s): %s\n",
                                   resp.job_id(), req.model(), req.reference(),
                                   r.super_weights_source(), r.passed() ? "yes" : "NO");
      std::cout << absl::StrFormat("%-52s %12s %12s %10s %12s %12s\n", "super weight", "reference",
                                   "model", "rel error", "SA ref", "SA model");
      for (const auto& w : r.super_weights()) {
        std::cout << absl::StrFormat("%-52s %12.6g %12.6g %10.3g %12.6g %12.6g%s\n",
                                     CoordinateName(w.coordinate()), w.reference_value(),
                                     w.model_value(), w.relative_error(), w.reference_activation(),
                                     w.model_activation(), w.kept() ? "" : "  LOST");
      }
      std::cout << absl::StrFormat("WikiText-2 perplexity: reference %.6g, model %.6g (x%.4g)\n",
                                   r.reference_perplexity(), r.model_perplexity(),
                                   r.perplexity_ratio());
      for (const std::string& f : r.failures()) std::cout << "failed: " << f << "\n";
    }
    return r.passed() ? 0 : 3;
  }
  if (verb == "jobs") {
    v1::ListJobsRequest req;
    req.set_model(absl::GetFlag(FLAGS_model));
    v1::ListJobsResponse resp;
    grpc::Status s = stub->ListJobs(&ctx, req, &resp);
    if (!s.ok()) return Failed(s);
    if (json) {
      PrintJson(resp);
    } else {
      for (const auto& j : resp.jobs()) std::cout << JobLine(j) << "\n";
    }
    return 0;
  }
  if (verb == "watch" || verb == "cancel") {
    if (absl::GetFlag(FLAGS_job).empty()) return Usage("--job=ID is required");
    if (verb == "cancel") {
      v1::CancelJobRequest req;
      req.set_job_id(absl::GetFlag(FLAGS_job));
      v1::Job job;
      grpc::Status s = stub->CancelJob(&ctx, req, &job);
      if (!s.ok()) return Failed(s);
      json ? PrintJson(job) : void(std::cout << JobLine(job) << "\n");
      return 0;
    }
    v1::WatchJobRequest req;
    req.set_job_id(absl::GetFlag(FLAGS_job));
    auto reader = stub->WatchJob(&ctx, req);
    v1::Job job;
    const bool tty = ::isatty(1);
    while (reader->Read(&job)) {
      if (json) {
        PrintJson(job, /*one_line=*/true);  // JSON Lines: one object per update
      } else if (tty) {
        const int filled = static_cast<int>(30 * job.progress());
        std::cout << "\r"
                  << absl::StrFormat("%s [%s%s] %3.0f%% %s", job.id(), std::string(filled, '#'),
                                     std::string(30 - filled, ' '), 100 * job.progress(),
                                     v1::Job::State_Name(job.state()))
                  << std::flush;
      } else {
        std::cout << JobLine(job) << "\n";
      }
    }
    if (tty && !json) std::cout << "\n";
    grpc::Status s = reader->Finish();
    if (!s.ok()) return Failed(s);
    // Non-zero unless the job succeeded, so that a pipeline can gate on watch.
    if (job.state() != v1::Job::SUCCEEDED) {
      const auto code = static_cast<grpc::StatusCode>(job.error_code() != 0 ? job.error_code()
                                                      : job.state() == v1::Job::CANCELLED
                                                          ? grpc::StatusCode::CANCELLED
                                                          : grpc::StatusCode::UNKNOWN);
      return Failed(grpc::Status(
          code, absl::StrFormat("job %s ended %s%s", job.id(), v1::Job::State_Name(job.state()),
                                job.error_message().empty() ? "" : ": " + job.error_message())));
    }
    return 0;
  }
  return Usage("unknown verb " + verb);
}
