#pragma once
/// \file selection.hpp
/// Selection policies: which k experts a token goes to.
///
/// Selection ranks experts by their logits, not their probabilities: softmax
/// and sigmoid are monotone, so the order is the same, and logits do not
/// collapse distinct values into float ties the way exp() and sigmoid() can
/// in their flat regions. Ties go to the lower expert id (torch.topk leaves
/// this unspecified; we define it).

#include <concepts>
#include <cstdint>

#include "moe/core/error.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// A per-token selection policy: `k` slots, `select` writes the best k
/// expert ids (best first), and `thin` may empty slots once weights are
/// known. Optional: `static constexpr bool uses_bias = true` makes the
/// router rank probs + RouterWeights::bias instead of the logits
/// (aux-loss-free balancing; the weights still come from the unbiased scores).
template <class S>
concept TokenSelection = requires(const S& s, const float* logits, index_t E, std::int32_t* idx, float* w,
                                  const RouteContext& ctx, index_t token) {
  { S::k } -> std::convertible_to<int>;
  s.select(logits, E, idx);
  s.thin(ctx, token, idx, w);
};

/// A per-call selection policy sees every token before choosing (expert
/// choice): `slots(E)` slots per token; `select_all` fills [T, slots] with
/// each token's experts best first, then no_expert.
template <class S>
concept CallSelection = requires(const S& s, const float* probs, const float* logits, index_t n, std::int32_t* idx) {
  { S::k } -> std::convertible_to<int>;
  { s.slots(n) } -> std::convertible_to<int>;
  s.select_all(probs, logits, n, n, idx);
};

template <class S>
concept SelectionPolicy = TokenSelection<S> || CallSelection<S>;

/// True for a selection that ranks by probs + bias.
template <class S>
inline constexpr bool selection_uses_bias = requires {
  requires S::uses_bias;
};

/// The k largest of n values, largest first, ties to the lower index: the
/// ranking every built-in selection uses, public for policies of your own.
/// Insertion into a sorted buffer: O(n·k), no allocation, stable by design.
inline void top_k_indices(const float* v, index_t n, int k, std::int32_t* idx) noexcept {
  int filled = 0;
  for (index_t e = 0; e < n; ++e) {
    // Walk from the end while v[e] beats the held value. Strict '>' keeps
    // the earlier (lower) index ahead on equal values.
    int pos = filled < k ? filled : k;
    while (pos > 0 && v[e] > v[idx[pos - 1]]) --pos;
    if (pos >= k) continue;
    const int last = filled < k ? filled : k - 1;
    for (int j = last; j > pos; --j) idx[j] = idx[j - 1];
    idx[pos] = std::int32_t(e);
    if (filled < k) ++filled;
  }
}

/// The K experts with the largest logits (Mixtral K = 2, Switch K = 1).
template <int K>
struct TopK {
  static_assert(K >= 1, "TopK<K>: K must be at least 1");
  static constexpr int k = K;
  void select(const float* logits, index_t E, std::int32_t* idx) const noexcept { top_k_indices(logits, E, K, idx); }
  void thin(const RouteContext&, index_t, std::int32_t*, float*) const noexcept {}
};

/// Top-k with k a number known at run time (a checkpoint's
/// num_experts_per_tok): the same selection as TopK<k>, one type for every
/// k. `k` is 0 ("decided per layer"); slots() gives the number.
struct RuntimeTopK {
  static constexpr int k = 0;
  int n = 2;  ///< experts per token
  int slots(index_t) const noexcept { return n; }
  void select(const float* logits, index_t E, std::int32_t* idx) const noexcept { top_k_indices(logits, E, n, idx); }
  void thin(const RouteContext&, index_t, std::int32_t*, float*) const noexcept {}
  void validate() const {
    detail::require(n >= 1, ErrorCode::invalid_argument, "RuntimeTopK: k must be at least 1, got ", n);
  }
};

/// Top-K on probs + a per-expert bias, for auxiliary-loss-free balancing
/// (DeepSeek-V3, Wang et al. 2024): the bias (RouterWeights::bias) moves an
/// expert up or down the ranking only; the combine weights come from the
/// unbiased scores, so the bias never reaches the output or the gradient.
/// Between steps a BiasBalancer nudges it towards equal load.
template <int K>
struct BiasedTopK {
  static_assert(K >= 1, "BiasedTopK<K>: K must be at least 1");
  static constexpr int k = K;
  static constexpr bool uses_bias = true;
  void select(const float* biased_scores, index_t E, std::int32_t* idx) const noexcept {
    top_k_indices(biased_scores, E, K, idx);
  }
  void thin(const RouteContext&, index_t, std::int32_t*, float*) const noexcept {}
};

/// GShard top-2 with the `random` second-expert policy (Lepikhin et al. 2020;
/// NLLB-MoE): the first expert is always used, the second is kept with
/// probability min(1, 2·w2), where w2 is its combine weight. A small second
/// weight contributes little, so dispatching it is often not worth the
/// capacity it takes. Applied in both modes (it is the routing rule, not
/// noise), drawn from the counter-based generator, so it is reproducible.
/// The first weight is not renormalised when the second is dropped (GShard).
struct GShardTop2 {
  static constexpr int k = 2;
  void select(const float* logits, index_t E, std::int32_t* idx) const noexcept { top_k_indices(logits, E, 2, idx); }
  void thin(const RouteContext& ctx, index_t token, std::int32_t* idx, float* w) const noexcept {
    const float u = uniform(ctx.key, RngStream::gshard_second, std::uint64_t(token), 0);
    if (!(2.0f * w[1] > u)) {  // kept iff 2·w2 > U(0,1), as NLLB's `random` policy
      idx[1] = no_expert;
      w[1] = 0.0f;
    }
  }
};

}  // namespace moe
