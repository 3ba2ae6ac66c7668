#pragma once
/// \file sampler.hpp
/// Choosing the next token from the logits: greedy, or sampled with a
/// temperature, top-k and top-p (nucleus) filters.
///
///   greedy       argmax (ties to the lower id)
///   temperature  p ∝ exp(logit / T)
///   top-k        keep the k most likely tokens
///   top-p        keep the fewest most-likely tokens whose mass reaches p
///   then draw one token from what is left, renormalised
///
/// The draw is Philox keyed by (seed, step): the same seed gives the same
/// text on any machine and thread count.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/rng.hpp"

namespace moe::mixtral {

struct SamplingOptions {
  float temperature = 0.0f;  ///< 0 = greedy
  int top_k = 0;             ///< 0 = no limit
  float top_p = 1.0f;        ///< 1 = no limit
  std::uint64_t seed = 0;

  void validate() const {
    moe::detail::require(std::isfinite(temperature) && temperature >= 0, ErrorCode::invalid_argument,
                         "sampling: temperature must be >= 0, got ", temperature);
    moe::detail::require(top_k >= 0, ErrorCode::invalid_argument, "sampling: top_k must be >= 0, got ", top_k);
    moe::detail::require(top_p > 0 && top_p <= 1, ErrorCode::invalid_argument,
                         "sampling: top_p must be in (0, 1], got ", top_p);
  }
};

/// Index of the largest logit; the lower index wins a tie.
inline std::int32_t argmax(std::span<const float> logits) {
  return std::int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

/// The token for generation step `step` (which keys the random draw).
inline std::int32_t sample(std::span<const float> logits, const SamplingOptions& o, std::uint64_t step) {
  if (o.temperature == 0.0f) return argmax(logits);
  // Candidates by descending logit (ties by id), cut to top-k.
  std::vector<std::int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int32_t a, std::int32_t b) { return logits[std::size_t(a)] > logits[std::size_t(b)]; });
  if (o.top_k > 0 && std::size_t(o.top_k) < order.size()) order.resize(std::size_t(o.top_k));
  // Softmax at the temperature over the candidates, in double.
  std::vector<double> p(order.size());
  const double top = logits[std::size_t(order[0])];
  double total = 0;
  for (std::size_t i = 0; i < order.size(); ++i)
    total += p[i] = std::exp((double(logits[std::size_t(order[i])]) - top) / o.temperature);
  // Nucleus: the shortest prefix whose mass reaches top_p.
  std::size_t keep = order.size();
  double mass = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    mass += p[i] / total;
    if (mass >= double(o.top_p)) {
      keep = i + 1;
      break;
    }
  }
  double kept_total = 0;
  for (std::size_t i = 0; i < keep; ++i) kept_total += p[i];
  const double u = double(uniform({o.seed, step}, RngStream::sampling, 0, 0)) * kept_total;
  double acc = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

}  // namespace moe::mixtral
