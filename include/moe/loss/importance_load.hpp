#pragma once
/// \file importance_load.hpp
/// Importance and load losses of Shazeer et al. 2017 (§4, appendix A):
///
///   importance_e = Σ_t G(x_t)_e            (the combine weights)
///   load_e       = Σ_t P(x_t, e)           (probability that e is in the top-k)
///   L = w_importance · CV²(importance) + w_load · CV²(load)
///
/// P is the smooth estimator of the paper: with noisy top-k in training,
/// P(x, e) = Φ((clean_e − threshold) / std_e), where threshold is the k-th
/// largest noisy logit among the other experts. Without noise, P is the
/// 0/1 indicator, so load is the routed count.
/// CV² = variance / mean², population variance, eps 1e-10 (tensor2tensor's
/// cv_squared).
///
/// Gradients: importance flows into the combine weights; the smooth load
/// flows into the clean logit, the threshold expert's noisy logit and the
/// noise scale (dΦ(z) = φ(z) dz). The 0/1 load has no gradient.

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/loss/balance_loss.hpp"
#include "moe/routing/selection.hpp"

namespace moe {

struct ImportanceLoadLoss {
  float w_importance = 0.1f;  ///< Shazeer 2017 used 0.1 for both
  float w_load = 0.1f;

  void validate() const {
    detail::require(std::isfinite(w_importance) && w_importance >= 0 && std::isfinite(w_load) && w_load >= 0,
                    ErrorCode::invalid_argument, "ImportanceLoadLoss: weights must be finite and >= 0, got ",
                    w_importance, " and ", w_load);
  }

  static double cv_squared(const std::vector<double>& v) {
    if (v.size() < 2) return 0.0;
    double mean = 0;
    for (double x : v) mean += x;
    mean /= double(v.size());
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    var /= double(v.size());
    return var / (mean * mean + 1e-10);
  }

  /// d CV²(v) / dv_i = 2 (v_i − m) / (n (m² + ε)) − 2 m · var / (n (m² + ε)²).
  static std::vector<double> cv_squared_grad(const std::vector<double>& v) {
    std::vector<double> g(v.size(), 0.0);
    if (v.size() < 2) return g;
    const double n = double(v.size());
    double mean = 0;
    for (double x : v) mean += x;
    mean /= n;
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    var /= n;
    const double denom = mean * mean + 1e-10;
    for (std::size_t i = 0; i < v.size(); ++i)
      g[i] = 2.0 * (v[i] - mean) / (n * denom) - 2.0 * mean * var / (n * denom * denom);
    return g;
  }

  static std::vector<double> importance(const Routing& r) {
    std::vector<double> imp(std::size_t(r.experts), 0.0);
    for (index_t t = 0; t < r.tokens; ++t)
      for (int j = 0; j < r.k; ++j)
        if (r.expert_at(t, j) != no_expert) imp[std::size_t(r.expert_at(t, j))] += r.weight_at(t, j);
    return imp;
  }

  static std::vector<double> load(const Routing& r) {
    std::vector<double> load(std::size_t(r.experts), 0.0);
    const bool smooth = !r.noise_std.empty() && r.k < r.experts;
    std::vector<float> sorted(std::size_t(r.experts));
    for (index_t t = 0; t < r.tokens; ++t) {
      if (!smooth) {
        for (int j = 0; j < r.k; ++j)
          if (r.expert_at(t, j) != no_expert) load[std::size_t(r.expert_at(t, j))] += 1.0;
        continue;
      }
      const float* noisy = r.logits.data() + t * r.experts;
      std::copy(noisy, noisy + r.experts, sorted.begin());
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      const float kth = sorted[std::size_t(r.k - 1)], next = sorted[std::size_t(r.k)];
      for (index_t e = 0; e < r.experts; ++e) {
        // If e is in the top k, the others' k-th largest is the (k+1)-th overall.
        const double threshold = noisy[e] >= kth ? next : kth;
        const double z = (double(r.clean_logits[std::size_t(t * r.experts + e)]) - threshold) /
                         double(r.noise_std[std::size_t(t * r.experts + e)]);
        load[std::size_t(e)] += 0.5 * std::erfc(-z / std::numbers::sqrt2);  // Φ(z)
      }
    }
    return load;
  }

  static constexpr std::string_view importance_name = "importance", load_name = "load";
  float evaluate(const Routing& r, const RoutingPlan&, LossValues& s) const {
    const float importance_cv2 = float(cv_squared(importance(r))), load_cv2 = float(cv_squared(load(r)));
    s.set(importance_name, importance_cv2);
    s.set(load_name, load_cv2);
    return w_importance * importance_cv2 + w_load * load_cv2;
  }

  void backward(const Routing& r, const RoutingPlan&, RoutingGrad& g) const {
    const std::vector<double> d_imp = cv_squared_grad(importance(r));
    for (index_t t = 0; t < r.tokens; ++t)
      for (int j = 0; j < r.k; ++j)
        if (const std::int32_t e = r.expert_at(t, j); e != no_expert)
          g.weight[std::size_t(t * r.k + j)] += float(double(w_importance) * d_imp[std::size_t(e)]);

    const bool smooth = !r.noise_std.empty() && r.k < r.experts;
    if (!smooth) return;  // a count has no gradient
    const std::vector<double> d_load = cv_squared_grad(load(r));
    const index_t E = r.experts;
    std::vector<std::int32_t> top(std::size_t(r.k + 1));
    for (index_t t = 0; t < r.tokens; ++t) {
      const float* noisy = r.logits.data() + t * E;
      top_k_indices(noisy, E, r.k + 1, top.data());
      const float kth = noisy[top[std::size_t(r.k - 1)]];
      for (index_t e = 0; e < E; ++e) {
        const std::size_t i = std::size_t(t * E + e);
        // The threshold is the k-th largest among the others (as in load()).
        const std::int32_t thr_expert = noisy[e] >= kth ? top[std::size_t(r.k)] : top[std::size_t(r.k - 1)];
        const double std_e = r.noise_std[i];
        const double z = (double(r.clean_logits[i]) - double(noisy[thr_expert])) / std_e;
        const double pdf = std::exp(-0.5 * z * z) / std::sqrt(2.0 * std::numbers::pi);
        const double c = double(w_load) * d_load[std::size_t(e)] * pdf / std_e;  // dL/dz / std
        g.clean_logits[i] += float(c);
        g.logits[std::size_t(t * E + thr_expert)] -= float(c);
        g.noise_std[i] -= float(c * z);
      }
    }
  }
};

}  // namespace moe
