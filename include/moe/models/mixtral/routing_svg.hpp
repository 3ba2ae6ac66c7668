#pragma once
/// \file routing_svg.hpp
/// A picture of where a sequence's tokens went, as SVG (no dependency):
///
///   a token × layer grid: each cell coloured by the expert the token's
///   first choice went to, its right third by the second choice (k ≥ 2);
///   beside each layer's row, how many (token, slot) pairs each expert took.
///
/// Every cell and bar carries data-* attributes (layer, token, expert, rank,
/// count), so a script (or a test) can read the picture back.
///
///   mx::StepOutput out = model.forward(ids, cache);
///   std::ofstream("routing.svg") << mx::routing_svg(out.routing, labels);

#include <algorithm>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/routing/routing.hpp"

namespace moe::mixtral {

namespace detail {
/// Text made safe inside an SVG element or attribute.
inline std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

/// A colour per expert: ten distinct hues, then lighter and darker turns.
inline std::string expert_colour(index_t e) {
  static constexpr const char* hues[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  if (e < 10) return hues[e];
  char buf[16];
  const unsigned h = unsigned(e) * 2654435761u;  // spread larger expert counts over the colour wheel
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", 60 + (h & 0x7f), 60 + ((h >> 8) & 0x7f), 60 + ((h >> 16) & 0x7f));
  return buf;
}

template <class... A>
void append(std::string& out, const char* format, A... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, format, args...);
  out += buf;
}
}  // namespace detail

/// The SVG of `layers` (one Routing per layer, as Model::forward returns
/// them) over the tokens labelled `tokens` (one label per routed row).
inline std::string routing_svg(std::span<const Routing> layers, std::span<const std::string> tokens,
                               std::string_view title = "Where each token went") {
  using moe::detail::require;
  require(!layers.empty(), ErrorCode::invalid_argument,
          "routing_svg: no layers with routing (a dense model routes nothing)");
  const index_t T = layers[0].tokens, E = layers[0].experts;
  const int k = layers[0].k;
  require(index_t(tokens.size()) == T, ErrorCode::shape_mismatch, "routing_svg: ", tokens.size(), " token labels for ",
          T, " routed tokens");
  for (std::size_t l = 0; l < layers.size(); ++l)
    require(layers[l].tokens == T && layers[l].experts == E && layers[l].k == k &&
                layers[l].expert.size() == std::size_t(T * k),
            ErrorCode::shape_mismatch, "routing_svg: layer ", l, " routes ", layers[l].tokens, " tokens to ",
            layers[l].experts, " experts (top-", layers[l].k, "), layer 0 ", T, " to ", E, " (top-", k, ")");

  const double cell = 22, left = 70, top = 90, bar_gap = 16, bar_width = 140;
  const double grid_w = cell * double(T), grid_h = cell * double(layers.size());
  const double legend_w = 75 * double(std::min<index_t>(E, 8));  // eight experts a line
  const double width = std::max(left + grid_w + bar_gap + bar_width, left + legend_w) + 20;
  const double height = top + grid_h + 40 + 18 * double((E + 7) / 8);
  std::string svg;
  detail::append(svg,
                 "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif' "
                 "font-size='11'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
                 width, height);
  detail::append(svg, "<text x='%.0f' y='18' font-size='14' font-weight='bold'>%s</text>\n", left,
                 detail::xml_escape(title).c_str());
  detail::append(svg, "<text x='%.0f' y='%.0f'>pairs per expert</text>\n", left + grid_w + bar_gap, top - 6);
  for (index_t t = 0; t < T; ++t) {  // token labels, turned up
    const double x = left + cell * double(t) + cell / 2 + 4, y = top - 6;
    detail::append(svg, "<text x='%.1f' y='%.1f' transform='rotate(-60 %.1f %.1f)' data-token='%lld'>%s</text>\n", x, y,
                   x, y, (long long)t, detail::xml_escape(tokens[std::size_t(t)]).c_str());
  }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const Routing& r = layers[l];
    const double y = top + cell * double(l);
    detail::append(svg, "<text x='%.0f' y='%.1f' text-anchor='end'>layer %zu</text>\n", left - 6, y + cell * 0.7, l);
    std::vector<index_t> taken(std::size_t(E), 0);
    for (index_t t = 0; t < T; ++t) {
      const double x = left + cell * double(t);
      for (int j = 0; j < std::min(k, 2); ++j) {  // first choice: the cell; second: its right third
        const std::int32_t e = r.expert_at(t, j);
        if (e < 0) continue;  // an empty slot
        const double x0 = j == 0 ? x : x + cell * 2 / 3, w = j == 0 ? cell : cell / 3;
        detail::append(svg,
                       "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s' stroke='white' "
                       "data-layer='%zu' data-token='%lld' data-rank='%d' data-expert='%d'/>\n",
                       x0, y, w, cell, detail::expert_colour(e).c_str(), l, (long long)t, j, e);
      }
      for (int j = 0; j < k; ++j)
        if (const std::int32_t e = r.expert_at(t, j); e >= 0) ++taken[std::size_t(e)];
    }
    const index_t most = std::max<index_t>(1, *std::max_element(taken.begin(), taken.end()));
    const double slot = (cell - 2) / double(E);
    for (index_t e = 0; e < E; ++e)
      detail::append(svg,
                     "<rect x='%.1f' y='%.2f' width='%.1f' height='%.2f' fill='%s' data-layer='%zu' data-expert='%lld' "
                     "data-count='%lld'/>\n",
                     left + grid_w + bar_gap, y + 1 + slot * double(e),
                     bar_width * double(taken[std::size_t(e)]) / double(most), std::max(slot - 0.5, 0.5),
                     detail::expert_colour(e).c_str(), l, (long long)e, (long long)taken[std::size_t(e)]);
  }
  for (index_t e = 0; e < E; ++e) {  // legend
    const double x = left + 75 * double(e % 8), y = top + grid_h + 22 + 18 * double(e / 8);
    detail::append(svg,
                   "<rect x='%.0f' y='%.0f' width='12' height='12' fill='%s'/><text x='%.0f' y='%.0f'>expert "
                   "%lld</text>\n",
                   x, y - 10, detail::expert_colour(e).c_str(), x + 16, y, (long long)e);
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace moe::mixtral
