#pragma once
// A line chart as SVG, no dependency: one polyline per series, axes, a
// legend. Enough to look at per-expert load over training steps.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace example {

/// series[i][step]: writes `path`, with a dashed line at `reference` (if
/// >= 0); returns false if the file cannot be written.
inline bool write_line_chart(const std::string& path, const std::string& title, const std::string& y_label,
                             const std::vector<std::vector<double>>& series, double y_max, double reference = -1) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  const double W = 640, H = 360, left = 56, right = 110, top = 36, bottom = 40;
  const double pw = W - left - right, ph = H - top - bottom;
  const std::size_t steps = series.empty() ? 0 : series[0].size();
  const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::fprintf(f,
               "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' font-family='sans-serif' "
               "font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
               W, H);
  std::fprintf(f, "<text x='%g' y='20' font-size='14' font-weight='bold'>%s</text>\n", left, title.c_str());
  for (int i = 0; i <= 4; ++i) {  // horizontal grid and y ticks
    const double v = y_max * i / 4, y = top + ph - ph * i / 4;
    std::fprintf(f, "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#ddd'/>\n", left, y, left + pw, y);
    std::fprintf(f, "<text x='%g' y='%g' text-anchor='end'>%.3g</text>\n", left - 6, y + 4, v);
  }
  std::fprintf(f, "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='black'/>\n", left, top + ph, left + pw, top + ph);
  std::fprintf(f, "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='black'/>\n", left, top, left, top + ph);
  std::fprintf(f, "<text x='%g' y='%g' text-anchor='middle'>training step (0 to %zu)</text>\n", left + pw / 2, H - 10,
               steps ? steps - 1 : 0);
  std::fprintf(f, "<text x='14' y='%g' transform='rotate(-90 14 %g)' text-anchor='middle'>%s</text>\n", top + ph / 2,
               top + ph / 2, y_label.c_str());
  if (reference >= 0) {
    const double y = top + ph - ph * std::min(1.0, reference / y_max);
    std::fprintf(f, "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='black' stroke-dasharray='4 4'/>\n", left, y,
                 left + pw, y);
    std::fprintf(f, "<text x='%g' y='%g'>balanced</text>\n", left + pw + 10, y + 4);
  }
  for (std::size_t s = 0; s < series.size(); ++s) {
    const char* color = colors[s % 10];
    std::fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='1.5' points='", color);
    for (std::size_t i = 0; i < steps; ++i) {
      const double x = left + pw * double(i) / double(std::max<std::size_t>(1, steps - 1));
      const double y = top + ph - ph * std::min(1.0, series[s][i] / y_max);
      std::fprintf(f, "%.1f,%.1f ", x, y);
    }
    std::fprintf(f, "'/>\n<text x='%g' y='%g' fill='%s'>expert %zu</text>\n", left + pw + 10, top + 14 + 16 * double(s),
                 color, s);
  }
  std::fprintf(f, "</svg>\n");
  return std::fclose(f) == 0;
}

}  // namespace example
