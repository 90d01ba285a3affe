// locate: the super weights of --model, found by their activation spikes and confirmed; its
// table, its per-layer profile (--plot) and --expect.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "client/common.h"
#include "client/job.h"
#include "client/verb.h"

namespace superweight::client {
namespace locate {  // one per verb: verbs compile together

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

Exit Run(const VerbContext& context) {
  v1::LocateRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  if (absl::Status in = FillInput(req.mutable_input()); !in.ok()) {
    return Usage(std::string(in.message()));
  }
  req.set_threshold(absl::GetFlag(FLAGS_threshold));
  req.set_precision(PrecisionFlag());
  req.set_skip_confirmation(absl::GetFlag(FLAGS_skip_confirmation));
  v1::LocateResponse resp;
  if (std::optional<Exit> done = RunJob(context, &Stub::Locate, req, resp, &v1::Job::locate)) {
    return *done;
  }
  if (context.json) {
    PrintJson(resp);
  } else {
    PrintLocate(resp);
  }
  const std::string plot = absl::GetFlag(FLAGS_plot);
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
      return kNotAsExpected;
    }
  }
  return kDone;
}

absl::Status CheckFlags(const std::set<std::string>& given) {
  if (given.count("expect") && absl::GetFlag(FLAGS_skip_confirmation)) {
    return absl::InvalidArgumentError(
        "--expect counts confirmed super weights, and --skip_confirmation confirms none");
  }
  return absl::OkStatus();
}

}  // namespace locate

Verb LocateVerb() {
  return {"locate",
          "the super weights of --model, found by their activation spikes and confirmed",
          {"threshold", "skip_confirmation", "expect"},
          locate::CheckFlags,
          locate::Run};
}

}  // namespace superweight::client
