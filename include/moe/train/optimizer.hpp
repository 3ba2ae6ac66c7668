#pragma once
/// \file optimizer.hpp
/// Two small optimisers, enough to train a layer in the examples and
/// tests: SGD with momentum, and Adam (with decoupled weight decay, AdamW).
/// Each keeps one state slot per parameter, in the order of the groups it
/// is stepped with; the order and sizes must not change between steps.
/// Frozen groups are skipped (their state stays as it was).
/// The update of each value is elementwise and sequential: the same bits on
/// every run. A step bumps the version of every group it updates, so a
/// layer that packed a copy of those weights refuses to run on it.

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/train/parameters.hpp"

namespace moe::train {

namespace detail {
/// One state vector per parameter, sized on first use and checked after.
inline std::vector<float>& slot(std::vector<std::vector<float>>& state, std::size_t i, const Parameter& p) {
  if (state.size() <= i) state.resize(i + 1);
  std::vector<float>& s = state[i];
  if (s.empty()) s.assign(p.value.size(), 0.0f);
  moe::detail::require(s.size() == p.value.size() && p.grad.size() == p.value.size(), ErrorCode::shape_mismatch,
                       "optimiser: parameter ", p.name, " has ", p.value.size(), " values and ", p.grad.size(),
                       " gradients; its state has ", s.size(), " (the groups changed between steps?)");
  return s;
}

/// Bumps the version of every group a step updated (once per owner is enough,
/// but a bump is cheap and groups of one owner share the counter).
inline void mark_written(std::span<ParamGroup> groups) noexcept {
  for (const ParamGroup& g : groups)
    if (!g.frozen) g.version.bump();
}
}  // namespace detail

/// v = momentum·v + g + wd·w;  w -= lr·v   (PyTorch's SGD, dampening 0).
///   moe::train::Sgd sgd({.lr = 0.1f, .momentum = 0.9f});
class Sgd {
 public:
  struct Options {
    float lr = 1e-2f;
    float momentum = 0.9f;
    float weight_decay = 0.0f;
  };
  Sgd() = default;
  explicit Sgd(Options o) : o_(o) {}
  const Options& options() const noexcept { return o_; }

  void step(std::span<ParamGroup> groups) {
    const auto [lr, momentum, weight_decay] = o_;
    std::size_t i = 0;
    for (ParamGroup& g : groups)
      for (Parameter& p : g.params) {
        std::vector<float>& v = detail::slot(velocity_, i++, p);
        if (g.frozen) continue;
        const float rate = lr * g.lr_scale;
        for (std::size_t j = 0; j < p.value.size(); ++j) {
          const float grad = p.grad[j] + weight_decay * p.value[j];
          v[j] = momentum * v[j] + grad;
          p.value[j] -= rate * v[j];
        }
      }
    detail::mark_written(groups);
  }

 private:
  Options o_{};
  std::vector<std::vector<float>> velocity_;
};

/// Adam (Kingma & Ba 2015) with bias correction; weight_decay is decoupled
/// (AdamW, Loshchilov & Hutter 2019): w -= lr·wd·w, not added to g.
///   moe::train::Adam adam({.lr = 1e-3f});
class Adam {
 public:
  struct Options {
    float lr = 1e-3f;
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float eps = 1e-8f;
    float weight_decay = 0.0f;
  };
  Adam() = default;
  explicit Adam(Options o) : o_(o) {}
  const Options& options() const noexcept { return o_; }

  void step(std::span<ParamGroup> groups) {
    const auto [lr, beta1, beta2, eps, weight_decay] = o_;
    ++t_;
    const double c1 = 1.0 - std::pow(double(beta1), double(t_)), c2 = 1.0 - std::pow(double(beta2), double(t_));
    std::size_t i = 0;
    for (ParamGroup& g : groups)
      for (Parameter& p : g.params) {
        std::vector<float>& m = detail::slot(m_, i, p);
        std::vector<float>& v = detail::slot(v_, i, p);
        ++i;
        if (g.frozen) continue;
        const float rate = lr * g.lr_scale;
        for (std::size_t j = 0; j < p.value.size(); ++j) {
          const float grad = p.grad[j];
          m[j] = beta1 * m[j] + (1.0f - beta1) * grad;
          v[j] = beta2 * v[j] + (1.0f - beta2) * grad * grad;
          const float m_hat = float(m[j] / c1), v_hat = float(v[j] / c2);
          p.value[j] -= rate * (m_hat / (std::sqrt(v_hat) + eps) + weight_decay * p.value[j]);
        }
      }
    detail::mark_written(groups);
  }
  std::uint64_t steps() const noexcept { return t_; }

 private:
  Options o_{};
  std::uint64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

}  // namespace moe::train
