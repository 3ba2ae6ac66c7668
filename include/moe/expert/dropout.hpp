#pragma once
/// \file dropout.hpp
/// Expert dropout (ST-MoE, Zoph et al. 2022 §3.2): dropout on the experts'
/// hidden activations, at a higher rate than the rest of the model (ST-MoE
/// fine-tunes with 0.1 outside and 0.4 inside the experts). Inverted
/// dropout: a kept unit is scaled by 1/(1 − rate), so inference needs no
/// rescaling.
///
/// The mask is a pure function of (seed, step, token, slot, hidden unit),
/// drawn from the counter-based generator: forward and backward replay the
/// same mask without storing it, and it does not depend on which thread or
/// which gathered row computes the pair.

#include <cmath>
#include <cstdint>

#include "moe/core/error.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/types.hpp"

namespace moe {

struct ExpertDropout {
  float rate = 0.0f;  ///< probability of zeroing a hidden unit; 0 = off
  RngKey key{};       ///< the forward call's (seed, step)
  /// A training call: a backward of it may follow, so a backend may keep
  /// what that needs (backend::Cpu keeps the pre-activations).
  bool for_backward = false;

  bool active() const noexcept { return rate > 0.0f; }

  /// Multiplier of hidden unit f of the (token, slot) pair `pair` = t·k + j:
  /// 0 if dropped, 1/(1 − rate) if kept.
  float scale(std::uint64_t pair, index_t f) const noexcept {
    if (!active()) return 1.0f;
    const bool keep = uniform(key, RngStream::expert_dropout, pair, std::uint64_t(f)) >= rate;
    return keep ? 1.0f / (1.0f - rate) : 0.0f;
  }

  static void validate(float rate) {
    detail::require(std::isfinite(rate) && rate >= 0.0f && rate < 1.0f, ErrorCode::invalid_argument,
                    "expert dropout rate must be in [0, 1), got ", rate);
  }
};

}  // namespace moe
