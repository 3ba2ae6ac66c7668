#pragma once
/// \file scoring.hpp
/// Scoring policies: how logits become router probabilities and the combine
/// weights of the chosen experts. All in fp32.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string_view>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// A scoring policy maps a token's logits to probabilities and the chosen
/// experts' combine weights. For training it also gives the two backward
/// steps (vector-Jacobian products), per token:
///   weights_backward:       dw → adds to dlogits and/or dprobs
///   probabilities_backward: dprobs → adds to dlogits
template <class C>
concept ScoringPolicy = requires(const C& c, const float* logits, float* probs, const std::int32_t* idx, float* w,
                                 index_t E, int k) {
  { C::name } -> std::convertible_to<std::string_view>;
  c.probabilities(logits, E, probs);
  c.weights(logits, probs, idx, k, w);
  c.weights_backward(logits, probs, idx, k, w, w, probs, probs);
  c.probabilities_backward(logits, probs, probs, E, probs);
};

namespace detail {
/// Softmax of one row, in fp32, max-subtracted so exp never overflows.
inline void softmax_row(const float* logits, index_t n, float* out) noexcept {
  float m = logits[0];
  for (index_t i = 1; i < n; ++i) m = std::max(m, logits[i]);
  float sum = 0.0f;
  for (index_t i = 0; i < n; ++i) sum += (out[i] = std::exp(logits[i] - m));
  const float inv = 1.0f / sum;
  for (index_t i = 0; i < n; ++i) out[i] *= inv;
}

/// Backward of softmax: dlogits += p ⊙ (dp − Σ p·dp).
inline void softmax_row_backward(const float* p, const float* dp, index_t n, float* dlogits) noexcept {
  float dot = 0.0f;
  for (index_t i = 0; i < n; ++i) dot += p[i] * dp[i];
  for (index_t i = 0; i < n; ++i) dlogits[i] += p[i] * (dp[i] - dot);
}
}  // namespace detail

/// Softmax over all E, keep the top k, renormalise over them: Hugging Face
/// Mixtral (identical to mistral-inference's softmax over the k chosen
/// logits, which is how it is computed here). With k = 1 the weight is 1.
struct SoftmaxThenTopK {
  static constexpr std::string_view name = "softmax, top-k, renormalised";
  void probabilities(const float* logits, index_t E, float* probs) const noexcept {
    detail::softmax_row(logits, E, probs);
  }
  void weights(const float* logits, const float*, const std::int32_t* idx, int k, float* w) const noexcept {
    // idx is best-first, so logits[idx[0]] is the largest chosen logit.
    const float m = logits[idx[0]];
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += (w[j] = std::exp(logits[idx[j]] - m));
    for (int j = 0; j < k; ++j) w[j] /= sum;
  }
  /// w is a softmax over the k chosen logits: dlogit[idx_j] += w_j (dw_j − Σ_i w_i dw_i).
  void weights_backward(const float*, const float*, const std::int32_t* idx, int k, const float* w, const float* dw,
                        float* dlogits, float*) const noexcept {
    float dot = 0.0f;
    for (int j = 0; j < k; ++j) dot += w[j] * dw[j];
    for (int j = 0; j < k; ++j) dlogits[idx[j]] += w[j] * (dw[j] - dot);
  }
  void probabilities_backward(const float*, const float* probs, const float* dprobs, index_t E,
                              float* dlogits) const noexcept {
    detail::softmax_row_backward(probs, dprobs, E, dlogits);
  }
};

/// Softmax over all E, keep the top k as they are (Switch: the weight of the
/// single expert is p_max; Qwen2-MoE's default). The weights sum to < 1.
struct SoftmaxTopKRaw {
  static constexpr std::string_view name = "softmax, top-k, not renormalised";
  void probabilities(const float* logits, index_t E, float* probs) const noexcept {
    detail::softmax_row(logits, E, probs);
  }
  void weights(const float*, const float* probs, const std::int32_t* idx, int k, float* w) const noexcept {
    for (int j = 0; j < k; ++j) w[j] = probs[idx[j]];
  }
  /// w_j = p[idx_j]: the gradient goes to the probabilities.
  void weights_backward(const float*, const float*, const std::int32_t* idx, int k, const float*, const float* dw,
                        float*, float* dprobs) const noexcept {
    for (int j = 0; j < k; ++j) dprobs[idx[j]] += dw[j];
  }
  void probabilities_backward(const float*, const float* probs, const float* dprobs, index_t E,
                              float* dlogits) const noexcept {
    detail::softmax_row_backward(probs, dprobs, E, dlogits);
  }
};

/// Independent sigmoid scores (DeepSeek-V3 style): weights are the chosen
/// sigmoids, optionally divided by their sum (norm_topk_prob) and multiplied
/// by `scale` (routed_scaling_factor).
struct Sigmoid {
  static constexpr std::string_view name = "sigmoid";
  bool normalize = true;
  float scale = 1.0f;

  void validate() const {
    detail::require(std::isfinite(scale) && scale > 0.0f, ErrorCode::invalid_argument,
                    "Sigmoid: scale must be finite and > 0, got ", scale);
  }
  void probabilities(const float* logits, index_t E, float* probs) const noexcept {
    for (index_t e = 0; e < E; ++e) probs[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  }
  void weights(const float*, const float* probs, const std::int32_t* idx, int k, float* w) const noexcept {
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += (w[j] = probs[idx[j]]);
    const float norm = normalize ? scale / (sum + 1e-20f) : scale;  // DeepSeek-V3 adds 1e-20
    for (int j = 0; j < k; ++j) w[j] *= norm;
  }
  /// w_j = scale·s_j / S (S = Σ chosen s + 1e-20) or scale·s_j:
  /// ds_j = scale·dw_j / S − scale·Σ_i dw_i s_i / S².
  void weights_backward(const float*, const float* probs, const std::int32_t* idx, int k, const float*, const float* dw,
                        float*, float* dprobs) const noexcept {
    if (!normalize) {
      for (int j = 0; j < k; ++j) dprobs[idx[j]] += scale * dw[j];
      return;
    }
    float sum = 0.0f, dot = 0.0f;
    for (int j = 0; j < k; ++j) {
      sum += probs[idx[j]];
      dot += dw[j] * probs[idx[j]];
    }
    const float S = sum + 1e-20f;
    for (int j = 0; j < k; ++j) dprobs[idx[j]] += scale * (dw[j] / S - dot / (S * S));
  }
  /// s = σ(l): dl += ds · s (1 − s).
  void probabilities_backward(const float*, const float* probs, const float* dprobs, index_t E,
                              float* dlogits) const noexcept {
    for (index_t e = 0; e < E; ++e) dlogits[e] += dprobs[e] * probs[e] * (1.0f - probs[e]);
  }
};

}  // namespace moe
