#pragma once
/// \file stats.hpp
/// RoutingStats: what happened in one forward call, always filled. Routing
/// observability is not optional: a layer that drops or starves experts
/// without saying so is a bug waiting to be found in a loss curve.

#include <cmath>
#include <optional>
#include <vector>

#include "moe/capacity/plan.hpp"
#include "moe/loss/loss_values.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

struct RoutingStats {
  index_t tokens = 0;
  index_t experts = 0;
  int k = 0;
  std::optional<index_t> capacity;  ///< per-expert capacity; nullopt = dropless
  /// [E] tokens each expert computed, after capacity. A token reaches an
  /// expert through at most one of its k slots, so this is also the expert's
  /// (token, slot) pairs; summed over experts it is T·k − dropped_slots −
  /// empty_slots, not T.
  std::vector<index_t> computed_per_expert;
  std::vector<index_t> routed_per_expert;  ///< [E] tokens routed to each expert, before capacity
  index_t dropped_slots = 0;               ///< pairs over capacity (their output is 0; the residual carries them)
  index_t dropped_tokens = 0;              ///< tokens that lost every slot (the layer passes them through untouched)
  index_t empty_slots = 0;                 ///< slots the selection chose to leave empty (GShard random second)
  float router_entropy = 0;                ///< mean over tokens of −Σ_e p log p, in nats (log E = uniform)

  /// Loss values, raw (no coefficient), by the name each loss policy gives
  /// its value: "balance" (E · Σ_e f_e · P_e, Switch / HF Mixtral aux loss),
  /// "z" (mean (logsumexp logits)², ST-MoE), "importance" and "load" (CV² of
  /// per-expert importance and load, Shazeer 2017), or a custom loss's own.
  LossValues losses;
  float weighted_loss = 0;  ///< Σ coefficient · loss: what a trainer adds to its objective

  /// A loss value by name; nullopt if the layer's loss policy has none of that name.
  std::optional<float> loss(std::string_view name) const noexcept { return losses.get(name); }

  /// Fraction of routed pairs that were dropped (0 when nothing was routed).
  double dropped_fraction() const noexcept {
    index_t routed = 0;
    for (index_t n : routed_per_expert) routed += n;
    return routed == 0 ? 0.0 : double(dropped_slots) / double(routed);
  }
};

/// Counts and entropy from a routing and its plan into `s` (its buffers
/// reused; the losses are reset, for the policy to add).
inline void make_stats(const Routing& r, const RoutingPlan& p, RoutingStats& s) {
  s.tokens = r.tokens;
  s.experts = r.experts;
  s.k = r.k;
  s.capacity = p.capacity;
  s.computed_per_expert.resize(std::size_t(r.experts));
  s.routed_per_expert.resize(std::size_t(r.experts));
  for (index_t e = 0; e < r.experts; ++e) {
    s.computed_per_expert[std::size_t(e)] = p.kept(e);
    s.routed_per_expert[std::size_t(e)] = p.routed_per_expert[std::size_t(e)];
  }
  s.dropped_slots = p.dropped;
  s.dropped_tokens = 0;
  s.empty_slots = p.empty_slots;
  s.losses.clear();
  s.weighted_loss = 0;
  double entropy = 0;
  for (index_t t = 0; t < r.tokens; ++t) {
    bool any_kept = false;
    for (int j = 0; j < r.k; ++j) any_kept = any_kept || !p.slot_dropped(t, j);
    if (!any_kept) ++s.dropped_tokens;
    // Normalised per row, so sigmoid scores (which need not sum to 1) get
    // the entropy of the distribution they imply; softmax rows are unchanged.
    double sum = 0;
    for (index_t e = 0; e < r.experts; ++e) sum += r.prob(t, e);
    for (index_t e = 0; e < r.experts; ++e) {
      const double q = sum > 0 ? r.prob(t, e) / sum : 0.0;
      if (q > 0) entropy -= q * std::log(q);
    }
  }
  s.router_entropy = r.tokens == 0 ? 0.0f : float(entropy / double(r.tokens));
}

/// The same, returning fresh stats.
inline RoutingStats make_stats(const Routing& r, const RoutingPlan& p) {
  RoutingStats s;
  make_stats(r, p, s);
  return s;
}

}  // namespace moe
