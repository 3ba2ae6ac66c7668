#pragma once
/// \file attention.hpp
/// Grouped-query self-attention with RoPE, a KV cache and an optional
/// sliding window: Mixtral's attention block. The projections are the
/// backend's `linear`; the scores, softmax and weighted sum are moe::attend
/// (moe/core/attention.hpp: the definition there, backend::Cpu's blocked
/// kernel where the backend has one).
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
#include "moe/core/attention.hpp"
#include "moe/core/error.hpp"
#include "moe/core/linear.hpp"
#include "moe/core/view.hpp"
#include "moe/models/mixtral/kv_cache.hpp"
#include "moe/models/mixtral/rope.hpp"

namespace moe::mixtral {

/// Heads, head size and window (moe/core/attention.hpp).
using AttentionShape = moe::AttentionShape;

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
  const index_t S = x.rows, hd = s.head_dim;
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

  // The keys any query of this call may see: the cached ones (older, one or
  // two runs of the ring), then this call's own, in position order.
  std::vector<index_t> new_positions(static_cast<std::size_t>(S));
  for (index_t t = 0; t < S; ++t) new_positions[std::size_t(t)] = first + t;
  std::vector<KeyValueRun> runs = cache.runs();
  runs.push_back({k.data(), v.data(), new_positions.data(), S});
  Matrix context(S, s.num_heads * hd);  // [S, nh·hd] heads side by side
  moe::attend(backend,
              {.shape = s, .q = q, .first = first, .runs = runs, .kv_stride = s.num_kv_heads * hd, .context = context});
  for (index_t t = 0; t < S; ++t) cache.append(first + t, k.row(t).data(), v.row(t).data());
  backend.linear(context, w.o, out);
}

}  // namespace moe::mixtral
