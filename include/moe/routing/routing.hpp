#pragma once
/// \file routing.hpp
/// The router's result: everything routing decided, in fp32, before any
/// capacity rule or expert compute. Losses and statistics read it; the
/// RoutingPlan is built from it.

#include <cstdint>
#include <vector>

#include "moe/core/rng.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// What one forward call is: its mode and the step keying its random draws.
struct ForwardOptions {
  Mode mode = Mode::eval;
  std::uint64_t step = 0;  ///< training step: part of the random key, so each step draws anew
};

/// What the router needs to know about the call it serves.
struct RouteContext {
  Mode mode = Mode::eval;
  RngKey key{};
};

/// Marks a slot the selection left empty on purpose (GShard's second expert
/// not taken): not a drop, the token just uses fewer experts.
inline constexpr std::int32_t no_expert = -1;

/// Result of routing T tokens over E experts with k slots each.
/// All matrices are row-major and token-major: element (t, e) is at t*E + e.
struct Routing {
  index_t tokens = 0;
  index_t experts = 0;
  int k = 0;
  std::vector<float> clean_logits;   ///< [T, E] x·Wgᵀ before noise (== logits without noise)
  std::vector<float> logits;         ///< [T, E] after noise: what selection and scoring saw
  std::vector<float> noise_std;      ///< [T, E] per-logit noise scale (NoisyTopK in training), else empty
  std::vector<float> probs;          ///< [T, E] softmax (or sigmoid) of logits
  std::vector<std::int32_t> expert;  ///< [T, k] chosen experts, best first; no_expert for an empty slot
  std::vector<float> weight;         ///< [T, k] combine weights (0 for an empty slot)

  float logit(index_t t, index_t e) const { return logits[std::size_t(t * experts + e)]; }
  float prob(index_t t, index_t e) const { return probs[std::size_t(t * experts + e)]; }
  std::int32_t expert_at(index_t t, int j) const { return expert[std::size_t(t * k + j)]; }
  float weight_at(index_t t, int j) const { return weight[std::size_t(t * k + j)]; }
};

}  // namespace moe
