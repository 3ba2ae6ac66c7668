#pragma once
/// \file bias_balancer.hpp
/// Auxiliary-loss-free load balancing (DeepSeek-V3, §2.1.2; Wang et al.
/// 2024): instead of a loss that pulls the router's probabilities towards
/// balance (and fights the task loss for the gradient), keep a per-expert
/// bias that only shifts which experts are *selected* (BiasedTopK), and
/// after each step move it against the load:
///
///   b_e += γ · sign(mean load − load_e)
///
/// An overloaded expert sinks in the ranking, an idle one rises; the
/// combine weights never see the bias, so the output and the gradients are
/// those of the unbiased router.

#include <span>

#include "moe/core/error.hpp"
#include "moe/layer/stats.hpp"

namespace moe::train {

struct BiasBalancer {
  float gamma = 1e-3f;  ///< update speed (DeepSeek-V3: 0.001 for most of pre-training)

  /// One update from a step's routing counts (pairs routed to each expert,
  /// before any capacity rule).
  void update(std::span<float> bias, const RoutingStats& s) const {
    moe::detail::require(bias.size() == s.routed_per_expert.size(), ErrorCode::shape_mismatch,
                         "BiasBalancer: bias has ", bias.size(), " entries, the stats count ",
                         s.routed_per_expert.size(), " experts");
    if (bias.empty()) return;
    double mean = 0;
    for (index_t n : s.routed_per_expert) mean += double(n);
    mean /= double(bias.size());
    for (std::size_t e = 0; e < bias.size(); ++e) {
      const double load = double(s.routed_per_expert[e]);
      bias[e] += load < mean ? gamma : load > mean ? -gamma : 0.0f;
    }
  }
};

}  // namespace moe::train
