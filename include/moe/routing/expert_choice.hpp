#pragma once
/// \file expert_choice.hpp
/// Expert-choice routing (Zhou et al. 2022): experts pick tokens instead of
/// tokens picking experts. With S = softmax(x·W_gᵀ) over experts, each
/// expert takes the C tokens with the largest S[·, e],
///
///   C = min(T, ceil(capacity_factor · T / E)),
///
/// so every expert does exactly C rows of work (perfect balance by
/// construction, no balance loss, no drops), while a token may get several
/// experts or none. A token no expert chose passes through on the residual
/// and is counted in RoutingStats::dropped_tokens. Combine weights are S of
/// the chosen pairs (use it with SoftmaxTopKRaw).
///
/// In the Routing, every token has E slots: its experts best first (by
/// logit), then no_expert. capacity_factor is the mean number of experts per
/// token (the paper's c; 2 matches top-2's compute).
///
/// The choice depends on the whole batch: a token's experts change with the
/// other tokens in the call, which is why it suits training and encoders
/// rather than token-by-token decoding.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/routing/selection.hpp"

namespace moe {

struct ExpertChoice {
  static constexpr int k = 0;  ///< slots are decided per call (E per token), not fixed
  double capacity_factor = 2.0;

  void validate() const {
    detail::require(std::isfinite(capacity_factor) && capacity_factor > 0.0, ErrorCode::invalid_argument,
                    "ExpertChoice: capacity_factor must be finite and > 0, got ", capacity_factor);
  }
  int slots(index_t E) const noexcept { return int(E); }

  /// Tokens each expert takes.
  index_t capacity(index_t T, index_t E) const noexcept {
    return std::min(T, index_t(std::ceil(capacity_factor * double(T) / double(E))));
  }

  /// probs, logits [T, E] → idx [T, E]: each expert's top-C tokens by prob
  /// (ties to the lower token), then each token's experts by logit.
  void select_all(const float* probs, const float* logits, index_t T, index_t E, std::int32_t* idx) const {
    const index_t C = capacity(T, E);
    std::vector<std::uint8_t> chosen(std::size_t(T * E), 0);
    std::vector<std::int32_t> order(static_cast<std::size_t>(T));
    for (index_t e = 0; e < E; ++e) {
      std::iota(order.begin(), order.end(), 0);
      const auto better = [&](std::int32_t a, std::int32_t b) {
        const float pa = probs[a * E + e], pb = probs[b * E + e];
        return pa > pb || (pa == pb && a < b);
      };
      std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(C), order.end(), better);
      for (index_t i = 0; i < C; ++i) chosen[std::size_t(order[std::size_t(i)] * E + e)] = 1;
    }
    for (index_t t = 0; t < T; ++t) {
      std::int32_t* it = idx + t * E;
      int n = 0;
      for (index_t e = 0; e < E; ++e)
        if (chosen[std::size_t(t * E + e)]) it[n++] = std::int32_t(e);
      const float* lt = logits + t * E;
      std::stable_sort(it, it + n, [&](std::int32_t a, std::int32_t b) { return lt[a] > lt[b]; });
      std::fill(it + n, it + E, no_expert);
    }
  }
};

}  // namespace moe
