#pragma once
/// \file attention.hpp
/// The part of grouped-query attention that a backend may speed up: given
/// queries after RoPE and the keys/values they may see, the context rows
///
///   context[t, head h] = Σ_j softmax_j(q_t,h · k_j / sqrt(hd)) · v_j
///
/// over the keys j visible from the query's position (causal, and with a
/// sliding window W only the W latest positions). Query head h reads
/// key/value head h / (num_heads / num_kv_heads).
///
/// The keys come as a few contiguous runs (a ring-buffer cache is two runs,
/// this call's new keys a third), oldest first, positions strictly
/// increasing across all runs: so the keys one query sees are one
/// contiguous range of that sequence, which is what lets a fast kernel walk
/// keys in blocks (moe/backend/cpu/attention.hpp).
///
/// attend_reference() below is the definition: one query, one head at a
/// time, scores then softmax then the weighted sum, written to be read.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/linear.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"

namespace moe {

struct AttentionShape {
  index_t num_heads = 0;
  index_t num_kv_heads = 0;
  index_t head_dim = 0;
  std::optional<index_t> window;  ///< sliding window, none = full causal

  /// May a query at position i see the key at position j?
  bool visible(index_t i, index_t j) const noexcept { return j <= i && (!window || j > i - *window); }
  index_t group() const noexcept { return num_heads / num_kv_heads; }  ///< query heads per kv head
};

/// `count` consecutive keys and values: row r at keys + r·stride (the same
/// for values), at positions[r].
struct KeyValueRun {
  const float* keys = nullptr;
  const float* values = nullptr;
  const index_t* positions = nullptr;
  index_t count = 0;
};

struct AttentionProblem {
  AttentionShape shape;
  MatrixView<const float> q;          ///< [S, num_heads·hd] after RoPE; row t is at position first + t
  index_t first = 0;                  ///< position of q's first row
  std::span<const KeyValueRun> runs;  ///< oldest first, positions increasing
  index_t kv_stride = 0;              ///< floats from one key row to the next (num_kv_heads·hd)
  MatrixView<float> context;          ///< [S, num_heads·hd], written whole
};

/// The keys of a problem as one sequence: key j's run, row, value row,
/// position, and the range of keys a query position sees.
class KeySequence {
 public:
  explicit KeySequence(const AttentionProblem& p) : p_(p) {
    for (const KeyValueRun& r : p.runs) {
      starts_.push_back(size_);
      size_ += r.count;
    }
  }
  index_t size() const noexcept { return size_; }
  /// Key index of the first key of run r.
  index_t run_start(std::size_t r) const noexcept { return starts_[r]; }

  struct Located {
    std::size_t run;
    index_t index;  ///< within the run
  };
  Located locate(index_t j) const noexcept {
    const auto r = std::size_t(std::upper_bound(starts_.begin(), starts_.end(), j) - starts_.begin()) - 1;
    return {r, j - starts_[r]};
  }
  index_t position(index_t j) const noexcept {
    const auto [r, i] = locate(j);
    return p_.runs[r].positions[i];
  }
  const float* key(index_t j) const noexcept {
    const auto [r, i] = locate(j);
    return p_.runs[r].keys + i * p_.kv_stride;
  }
  const float* value(index_t j) const noexcept {
    const auto [r, i] = locate(j);
    return p_.runs[r].values + i * p_.kv_stride;
  }

  /// The keys a query at `pos` sees, [first, last): positions increase, so
  /// they are one range (AttentionShape::visible of each key in it).
  std::pair<index_t, index_t> visible_range(index_t pos) const {
    const std::optional<index_t>& w = p_.shape.window;
    const index_t oldest = w ? pos - *w + 1 : std::numeric_limits<index_t>::min();
    return {first_at_least(oldest), first_at_least(pos + 1)};
  }

 private:
  index_t first_at_least(index_t position_bound) const {  // binary search over the positions
    index_t lo = 0, hi = size_;
    while (lo < hi) {
      const index_t mid = lo + (hi - lo) / 2;
      if (position(mid) < position_bound)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  }
  const AttentionProblem& p_;
  std::vector<index_t> starts_;
  index_t size_ = 0;
};

/// The definition, one query row and head at a time.
inline void attend_reference(const AttentionProblem& p) {
  const AttentionShape& s = p.shape;
  const index_t S = p.q.rows, hd = s.head_dim;
  const KeySequence keys(p);
  const float scale = float(1.0 / std::sqrt(double(hd)));
  std::vector<float> score(static_cast<std::size_t>(keys.size()));
  for (index_t t = 0; t < S; ++t) {
    const auto [first, last] = keys.visible_range(p.first + t);  // the keys this query may see
    for (index_t h = 0; h < s.num_heads; ++h) {
      const index_t kv_offset = (h / s.group()) * hd;  // the kv head this query head shares
      const float* qh = p.q.row(t) + h * hd;
      float best = -INFINITY;
      for (index_t j = first; j < last; ++j) {
        score[std::size_t(j)] = moe::detail::dot(qh, keys.key(j) + kv_offset, hd) * scale;
        best = std::max(best, score[std::size_t(j)]);
      }
      double total = 0;  // softmax: exp(score − max) / Σ
      for (index_t j = first; j < last; ++j) {
        score[std::size_t(j)] = std::exp(score[std::size_t(j)] - best);
        total += score[std::size_t(j)];
      }
      float* ch = p.context.row(t) + h * hd;
      std::fill(ch, ch + hd, 0.0f);
      for (index_t j = first; j < last; ++j) {
        const float w = float(score[std::size_t(j)] / total);
        if (w == 0.0f) continue;
        const float* vj = keys.value(j) + kv_offset;
        for (index_t i = 0; i < hd; ++i) ch[i] += w * vj[i];
      }
    }
  }
}

/// A moe::Error unless the problem's shapes agree and its keys' positions
/// increase (what every implementation relies on).
inline void validate(const AttentionProblem& p) {
  const AttentionShape& s = p.shape;
  moe::detail::require(s.num_heads > 0 && s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0 && s.head_dim > 0 &&
                           (!s.window || *s.window > 0),
                       ErrorCode::invalid_argument, "attention: ", s.num_heads, " heads, ", s.num_kv_heads,
                       " kv heads, head_dim ", s.head_dim, ", window ", s.window.value_or(0),
                       " (heads must be a positive multiple of kv heads)");
  const index_t width = s.num_heads * s.head_dim;
  moe::detail::require(p.q.cols == width && p.context.rows == p.q.rows && p.context.cols == width,
                       ErrorCode::shape_mismatch, "attention: expected q and context [S, ", width, "], got q [",
                       p.q.rows, ", ", p.q.cols, "] and context [", p.context.rows, ", ", p.context.cols, "]");
  moe::detail::require(p.kv_stride >= s.num_kv_heads * s.head_dim, ErrorCode::shape_mismatch, "attention: key rows ",
                       p.kv_stride, " floats apart, expected at least ", s.num_kv_heads * s.head_dim,
                       " (kv heads · head_dim)");
  index_t previous = std::numeric_limits<index_t>::min();
  for (const KeyValueRun& r : p.runs) {
    moe::detail::require(r.count >= 0 && (r.count == 0 || (r.keys && r.values && r.positions)),
                         ErrorCode::invalid_argument, "attention: a run of ", r.count, " keys without data");
    for (index_t i = 0; i < r.count; ++i) {
      moe::detail::require(r.positions[i] > previous, ErrorCode::invalid_argument,
                           "attention: key positions must increase, got ", r.positions[i], " after ", previous);
      previous = r.positions[i];
    }
  }
}

/// A backend that computes attention itself (backend::Cpu: blocked,
/// threaded, SIMD); the others use attend_reference.
template <class B>
concept AttentionBackend = requires(const B& b, const AttentionProblem& p) {
  b.attend(p);
};

template <class B>
void attend(const B& backend, const AttentionProblem& p) {
  validate(p);
  if constexpr (AttentionBackend<B>)
    backend.attend(p);
  else
    attend_reference(p);
}

}  // namespace moe
