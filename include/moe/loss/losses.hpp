#pragma once
/// \file losses.hpp
/// Losses<A, B, ...>: several balance losses at once (Switch = balance + z).

#include <tuple>

#include "moe/loss/balance_loss.hpp"

namespace moe {

template <BalanceLossPolicy... Ls>
struct Losses {
  std::tuple<Ls...> parts;

  Losses() = default;
  /// Not explicit, so a layer's loss argument can be a braced list:
  /// `{SwitchBalanceLoss{.alpha = 0.01f}, RouterZLoss{.beta = 1e-3f}}`.
  Losses(Ls... ls) : parts(ls...) {}  // NOLINT(google-explicit-constructor)

  void validate() const {
    std::apply([](const auto&... l) { (detail::validate_policy(l), ...); }, parts);
  }
  float evaluate(const Routing& r, const RoutingPlan& p, LossValues& s) const {
    return std::apply([&](const auto&... l) { return (0.0f + ... + l.evaluate(r, p, s)); }, parts);
  }
  void backward(const Routing& r, const RoutingPlan& p, RoutingGrad& g) const requires(TrainableLoss<Ls>&&...) {
    std::apply([&](const auto&... l) { (l.backward(r, p, g), ...); }, parts);
  }
  template <class L>
  const L& get() const noexcept {
    return std::get<L>(parts);
  }
};

}  // namespace moe
