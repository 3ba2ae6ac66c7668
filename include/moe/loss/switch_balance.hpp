#pragma once
/// \file switch_balance.hpp
/// Load-balancing loss of Switch Transformers (Fedus et al. 2021, eq. 4):
///
///   L = E · Σ_e f_e · P_e,   P_e = mean_t p[t, e],   f_e = share of routing to e
///
/// f is a count (no gradient flows through it); P carries the gradient.
/// Systems disagree on what f counts, and so on the value of a perfectly
/// balanced router; `counting` names the variant (see ANCHORS.md):
///   every_slot    - all k slots (HF Mixtral, f sums to k): balanced = k
///   top1          - first choice only, before capacity (Switch paper,
///                   Mesh-TF, Tutel): balanced = 1
///   top1_hf_quirk - first choice after capacity, a dropped token counted as
///                   expert 0 (what HF SwitchTransformers computes)
///
/// Gradient (f constant): dL/dp[t, e] = E · f_e / T, for every token.

#include <cmath>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/loss/balance_loss.hpp"

namespace moe {

enum class SlotCounting { every_slot, top1, top1_hf_quirk };

struct SwitchBalanceLoss {
  float alpha = 0.01f;  ///< coefficient (Switch 1e-2; HF Mixtral router_aux_loss_coef 1e-3, Mixtral-8x7B 2e-2)
  SlotCounting counting = SlotCounting::every_slot;

  void validate() const {
    detail::require(std::isfinite(alpha) && alpha >= 0, ErrorCode::invalid_argument,
                    "SwitchBalanceLoss: alpha must be finite and >= 0, got ", alpha);
  }

  /// f_e: the routing share of expert e under the chosen counting. Counted
  /// per expert (no [E] buffer), so evaluating the loss allocates nothing.
  double fraction(const Routing& r, const RoutingPlan& p, index_t e) const {
    double f = 0;
    for (index_t t = 0; t < r.tokens; ++t) {
      const int slots = counting == SlotCounting::every_slot ? r.k : 1;
      for (int j = 0; j < slots; ++j) {
        std::int32_t chosen = r.expert_at(t, j);
        if (counting == SlotCounting::top1_hf_quirk && p.slot_dropped(t, j)) chosen = 0;
        if (chosen == std::int32_t(e)) f += 1.0;
      }
    }
    return f / double(r.tokens);
  }

  float value(const Routing& r, const RoutingPlan& p) const {
    if (r.tokens == 0) return 0.0f;
    double loss = 0;
    for (index_t e = 0; e < r.experts; ++e) {
      double P = 0;
      for (index_t t = 0; t < r.tokens; ++t) P += r.prob(t, e);
      loss += fraction(r, p, e) * (P / double(r.tokens));
    }
    return float(double(r.experts) * loss);
  }

  static constexpr std::string_view value_name = "balance";
  float evaluate(const Routing& r, const RoutingPlan& p, LossValues& s) const {
    const float v = value(r, p);
    s.set(value_name, v);
    return alpha * v;
  }

  /// Adds alpha · dL/dprobs.
  void backward(const Routing& r, const RoutingPlan& p, RoutingGrad& g) const {
    if (r.tokens == 0) return;
    for (index_t e = 0; e < r.experts; ++e) {
      const float d = float(double(alpha) * double(r.experts) * fraction(r, p, e) / double(r.tokens));
      for (index_t t = 0; t < r.tokens; ++t) g.probs[std::size_t(t * r.experts + e)] += d;
    }
  }
};

}  // namespace moe
