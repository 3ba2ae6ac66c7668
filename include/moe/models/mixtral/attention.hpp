#pragma once
/// \file attention.hpp
/// Grouped-query self-attention with RoPE, a KV cache and an optional
/// sliding window: Mixtral's attention block, one plain loop per step.
///
///   q = x·Wqᵀ [S, nh·hd]   k = x·Wkᵀ, v = x·Wvᵀ [S, nkv·hd]
///   rotate q and k by their absolute positions (rope.hpp)
///   query head h reads key/value head h / (nh / nkv)
///   score(i, j) = q_i·k_j / sqrt(hd) for keys j the query may see:
///     j <= i, and with a window W also j > i − W
///   out = (softmax over those keys of the scores) · v, heads side by side, · Woᵀ
///
/// The keys a query sees come from the cache (earlier calls) and from this
/// call; new keys go into the cache after the scores are taken, so a rolling
/// cache of W entries is enough however many tokens one call brings.

#include <cmath>
#include <optional>
#include <vector>

#include "moe/backend/backend.hpp"
#include "moe/core/error.hpp"
#include "moe/core/linear.hpp"
#include "moe/core/view.hpp"
#include "moe/models/mixtral/kv_cache.hpp"
#include "moe/models/mixtral/rope.hpp"

namespace moe::mixtral {

struct AttentionShape {
  index_t num_heads = 0;
  index_t num_kv_heads = 0;
  index_t head_dim = 0;
  std::optional<index_t> window;  ///< sliding window, none = full causal

  /// May a query at position i see the key at position j?
  bool visible(index_t i, index_t j) const noexcept { return j <= i && (!window || j > i - *window); }
};

struct AttentionWeights {
  WeightMatrix q, k, v, o;  ///< [nh·hd, H], [nkv·hd, H], [nkv·hd, H], [H, nh·hd]
};

/// What a caller may ask to see of one call (the golden cases, the example).
struct AttentionTrace {
  Matrix q_rope;  ///< [S, nh·hd] queries after RoPE, token-major
  Matrix k_rope;  ///< [S, nkv·hd] keys after RoPE
};

inline void validate(const AttentionShape& s, const AttentionWeights& w, index_t hidden) {
  moe::detail::require(s.num_heads > 0 && s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0 && s.head_dim > 0 &&
                           s.head_dim % 2 == 0 && (!s.window || *s.window > 0),
                       ErrorCode::invalid_argument, "attention: ", s.num_heads, " heads, ", s.num_kv_heads,
                       " kv heads, head_dim ", s.head_dim, " (heads must be a multiple of kv heads, head_dim even)");
  moe::detail::require_weight(w.q, "attention q_proj", s.num_heads * s.head_dim, hidden);
  moe::detail::require_weight(w.k, "attention k_proj", s.num_kv_heads * s.head_dim, hidden);
  moe::detail::require_weight(w.v, "attention v_proj", s.num_kv_heads * s.head_dim, hidden);
  moe::detail::require_weight(w.o, "attention o_proj", hidden, s.num_heads * s.head_dim);
}

/// out [S, H] = attention of the S rows of x at positions first.., reading
/// and then extending `cache`. `rope` holds the S positions' angles.
template <LinearBackend B>
void attention(const B& backend, MatrixView<const float> x, const AttentionWeights& w, const AttentionShape& s,
               const RopeTable& rope, index_t first, LayerKvCache& cache, MatrixView<float> out,
               AttentionTrace* trace = nullptr) {
  const index_t S = x.rows, hd = s.head_dim, group = s.num_heads / s.num_kv_heads;
  Matrix q(S, s.num_heads * hd), k(S, s.num_kv_heads * hd), v(S, s.num_kv_heads * hd);
  backend.linear(x, w.q, q);
  backend.linear(x, w.k, k);
  backend.linear(x, w.v, v);
  for (index_t t = 0; t < S; ++t) {
    for (index_t h = 0; h < s.num_heads; ++h) rope.rotate(q.row(t).data() + h * hd, t);
    for (index_t h = 0; h < s.num_kv_heads; ++h) rope.rotate(k.row(t).data() + h * hd, t);
  }
  if (trace) {
    trace->q_rope = q;
    trace->k_rope = k;
  }

  // The keys visible to any query of this call: cached ones first (older),
  // then this call's own, in position order.
  const index_t cached = cache.size();
  const auto key_position = [&](index_t j) { return j < cached ? cache.position(j) : first + (j - cached); };
  const auto key_row = [&](index_t j) { return j < cached ? cache.key(j) : k.row(j - cached).data(); };
  const auto value_row = [&](index_t j) { return j < cached ? cache.value(j) : v.row(j - cached).data(); };

  const float scale = float(1.0 / std::sqrt(double(hd)));
  Matrix context = Matrix::Zero(S, s.num_heads * hd);  // [S, nh·hd] heads side by side
  std::vector<float> score(static_cast<std::size_t>(cached + S));
  for (index_t t = 0; t < S; ++t) {
    const index_t pos = first + t;
    for (index_t h = 0; h < s.num_heads; ++h) {
      const index_t kv_offset = (h / group) * hd;  // the kv head this query head shares
      const float* qh = q.row(t).data() + h * hd;
      float best = -INFINITY;
      for (index_t j = 0; j < cached + t + 1; ++j) {
        score[std::size_t(j)] =
            s.visible(pos, key_position(j)) ? moe::detail::dot(qh, key_row(j) + kv_offset, hd) * scale : -INFINITY;
        best = std::max(best, score[std::size_t(j)]);
      }
      double total = 0;  // softmax: exp(score − max) / Σ, masked keys give exp(−inf) = 0
      for (index_t j = 0; j < cached + t + 1; ++j) {
        score[std::size_t(j)] = std::exp(score[std::size_t(j)] - best);
        total += score[std::size_t(j)];
      }
      float* ch = context.row(t).data() + h * hd;
      for (index_t j = 0; j < cached + t + 1; ++j) {
        const float p = float(score[std::size_t(j)] / total);
        if (p == 0.0f) continue;
        const float* vj = value_row(j) + kv_offset;
        for (index_t i = 0; i < hd; ++i) ch[i] += p * vj[i];
      }
    }
  }
  for (index_t t = 0; t < S; ++t) cache.append(first + t, k.row(t).data(), v.row(t).data());
  backend.linear(context, w.o, out);
}

}  // namespace moe::mixtral
