#pragma once
/// \file capacity.hpp
/// Capacity policies: how many (token, slot) pairs an expert may take.
/// Overflow is dropped: the layer's output for that slot is zero and the
/// residual connection around the layer carries the token. Every drop is
/// counted in RoutingStats; none is silent.

#include <cmath>
#include <concepts>
#include <optional>

#include "moe/capacity/plan.hpp"
#include "moe/core/error.hpp"

namespace moe {

template <class P>
concept CapacityPolicy = requires(const P& p, PlanShape s, Mode m) {
  { p.capacity(s, m) } -> std::same_as<std::optional<index_t>>;
  { p.priority() } -> std::same_as<Priority>;
};

/// Every pair gets its expert (Mixtral, MegaBlocks): no capacity, no drops.
struct Dropless {
  std::optional<index_t> capacity(PlanShape, Mode) const noexcept { return std::nullopt; }
  Priority priority() const noexcept { return Priority::token_order; }
};

/// C = max(min, ceil(factor · T · k / E)), factor chosen by mode.
/// For k = 1 this is the Switch rule (tokens per batch / E × factor);
/// for k > 1 it counts slots, as DeepSpeed's top-2 (which doubles the factor).
struct CapacityFactor {
  double train = 1.25;  ///< factor in training (Switch: 1.0 to 1.25)
  double eval = 2.0;    ///< factor at inference (Switch evaluates with 2.0)
  index_t min = 4;      ///< lower bound on C (DeepSpeed `min_capacity`)
  Priority order = Priority::token_order;

  void validate() const {
    detail::require(train > 0.0 && std::isfinite(train), ErrorCode::invalid_argument,
                    "CapacityFactor: train factor must be finite and > 0, got ", train);
    detail::require(eval > 0.0 && std::isfinite(eval), ErrorCode::invalid_argument,
                    "CapacityFactor: eval factor must be finite and > 0, got ", eval);
    detail::require(min >= 0, ErrorCode::invalid_argument, "CapacityFactor: min must be >= 0, got ", min);
  }
  Priority priority() const noexcept { return order; }
  std::optional<index_t> capacity(PlanShape s, Mode m) const noexcept {
    const double factor = m == Mode::train ? train : eval;
    // factor·T·k is exact in double for the factors in use (dyadic
    // rationals); the quotient is correctly rounded, so an exact integer
    // quotient stays exact and ceil cannot overshoot.
    const double c = std::ceil(factor * double(s.tokens) * double(s.k) / double(s.experts));
    return std::max(min, index_t(c));
  }
};

}  // namespace moe
