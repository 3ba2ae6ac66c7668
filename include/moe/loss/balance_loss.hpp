#pragma once
/// \file balance_loss.hpp
/// The BalanceLoss concept and the trivial policy. A loss reads the routing
/// and the plan, records its raw value in the stats, and returns its
/// weighted contribution (coefficient · value).

#include <concepts>

#include "moe/capacity/plan.hpp"
#include "moe/layer/stats.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class L>
concept BalanceLossPolicy = requires(const L& l, const Routing& r, const RoutingPlan& p, RoutingStats& s) {
  { l.evaluate(r, p, s) } -> std::same_as<float>;
  l.validate();
};

/// No auxiliary loss (inference, or a router balanced by other means).
struct NoLoss {
  float evaluate(const Routing&, const RoutingPlan&, RoutingStats&) const noexcept { return 0.0f; }
  void validate() const {}
};

}  // namespace moe
