#include "client/plot.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_format.h"

namespace superweight::client {

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

}  // namespace superweight::client
