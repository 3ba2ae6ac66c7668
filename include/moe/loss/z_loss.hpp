#pragma once
/// \file z_loss.hpp
/// Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5):
///
///   L_z = mean_t ( log Σ_e exp(logits[t, e]) )²
///
/// It penalises large logits, which make the router's softmax brittle in
/// low precision. ST-MoE uses beta = 1e-3.
/// Gradient: dL_z/dlogits[t, e] = 2 · lse_t · softmax(logits_t)_e / T.

#include <algorithm>
#include <cmath>

#include "moe/core/error.hpp"
#include "moe/loss/balance_loss.hpp"

namespace moe {

struct RouterZLoss {
  float beta = 1e-3f;

  void validate() const {
    detail::require(std::isfinite(beta) && beta >= 0, ErrorCode::invalid_argument,
                    "RouterZLoss: beta must be finite and >= 0, got ", beta);
  }

  static double logsumexp(const float* v, index_t n) noexcept {
    const double m = *std::max_element(v, v + n);
    double s = 0;
    for (index_t i = 0; i < n; ++i) s += std::exp(double(v[i]) - m);
    return m + std::log(s);
  }

  float value(const Routing& r) const {
    if (r.tokens == 0) return 0.0f;
    double sum = 0;
    for (index_t t = 0; t < r.tokens; ++t) {
      const double lse = logsumexp(r.logits.data() + t * r.experts, r.experts);
      sum += lse * lse;
    }
    return float(sum / double(r.tokens));
  }

  static constexpr std::string_view value_name = "z";
  float evaluate(const Routing& r, const RoutingPlan&, LossValues& s) const {
    const float v = value(r);
    s.set(value_name, v);
    return beta * v;
  }

  /// Adds beta · dL_z/dlogits.
  void backward(const Routing& r, const RoutingPlan&, RoutingGrad& g) const {
    if (r.tokens == 0) return;
    const index_t E = r.experts;
    for (index_t t = 0; t < r.tokens; ++t) {
      const float* l = r.logits.data() + t * E;
      const double lse = logsumexp(l, E);
      const double c = double(beta) * 2.0 * lse / double(r.tokens);
      for (index_t e = 0; e < E; ++e) g.logits[std::size_t(t * E + e)] += float(c * std::exp(double(l[e]) - lse));
    }
  }
};

}  // namespace moe
