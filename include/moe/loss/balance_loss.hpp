#pragma once
/// \file balance_loss.hpp
/// The BalanceLoss concept and the trivial policy. A loss reads the routing
/// and the plan, records its raw value under its own name in a LossValues
/// (the layer keeps them in RoutingStats::losses), and returns its weighted
/// contribution (coefficient · value). A loss that can train also
/// has `backward`, which adds coefficient · d value to a RoutingGrad (on
/// whichever router output the value reads: weights, probs or logits).

#include <concepts>

#include "moe/capacity/plan.hpp"
#include "moe/loss/loss_values.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/routing_grad.hpp"

namespace moe {

template <class L>
concept BalanceLossPolicy = requires(const L& l, const Routing& r, const RoutingPlan& p, LossValues& s) {
  { l.evaluate(r, p, s) } -> std::same_as<float>;
};

template <class L>
concept TrainableLoss = BalanceLossPolicy<L> &&
    requires(const L& l, const Routing& r, const RoutingPlan& p, RoutingGrad& g) {
  l.backward(r, p, g);
};

/// No auxiliary loss (inference, or a router balanced by other means).
struct NoLoss {
  float evaluate(const Routing&, const RoutingPlan&, LossValues&) const noexcept { return 0.0f; }
  void backward(const Routing&, const RoutingPlan&, RoutingGrad&) const noexcept {}
};

}  // namespace moe
