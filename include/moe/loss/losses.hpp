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
  explicit Losses(Ls... ls) : parts(ls...) {}

  void validate() const {
    std::apply([](const auto&... l) { (l.validate(), ...); }, parts);
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
