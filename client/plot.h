// The line charts of ablate and quantize, as SVG.
#ifndef SUPERWEIGHT_CLIENT_PLOT_H_
#define SUPERWEIGHT_CLIENT_PLOT_H_

#include <string>
#include <utility>
#include <vector>

namespace superweight::client {

struct Series {
  std::string name;
  std::string color;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in x order
};

// A line chart as SVG, y from 0, with `x_ticks`' labels at their x. False when the file cannot
// be written.
bool PlotLines(const std::string& path, const std::string& title, const std::string& x_label,
               std::vector<Series> series,
               const std::vector<std::pair<double, std::string>>& x_ticks);

}  // namespace superweight::client

#endif  // SUPERWEIGHT_CLIENT_PLOT_H_
