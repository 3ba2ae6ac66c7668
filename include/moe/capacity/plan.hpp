#pragma once
/// \file plan.hpp
/// RoutingPlan: the hand-off between routing and compute. A flat structure
/// (a few scalars and plain int32/float arrays, nothing that points
/// elsewhere) so that it can be copied to a device or sent to another
/// process as it is: the per-expert offsets are an all-to-all's send counts,
/// and the per-slot combine weights travel with it, so combining needs the
/// plan and the expert rows only, never the router's output.
///
/// The (token, slot) pairs are sorted by expert with a counting sort; within
/// an expert, rows follow the capacity policy's priority, so the first
/// `capacity` rows of an expert are exactly the pairs it keeps.

#include <algorithm>
#include <climits>
#include <cstdint>
#include <numeric>
#include <optional>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// Order in which (token, slot) pairs claim expert capacity.
enum class Priority {
  /// Slot-major token order: every token's first choice before any second
  /// choice, tokens in sequence order (Switch cumsum; GShard/NLLB queue the
  /// second choices behind all first choices).
  token_order,
  /// Slot-major, then descending router probability of the chosen expert,
  /// ties in token order (V-MoE "batch prioritized routing").
  router_score,
};

/// The sizes a capacity rule may depend on.
struct PlanShape {
  index_t tokens = 0;
  index_t experts = 0;
  int k = 0;
};

struct RoutingPlan {
  index_t tokens = 0;
  index_t experts = 0;
  int k = 0;
  std::optional<index_t> capacity;              ///< rows an expert may take; nullopt = dropless
  std::vector<std::int32_t> offsets;            ///< [E + 1] expert e owns rows offsets[e] .. offsets[e+1]
  std::vector<std::int32_t> row_token;          ///< [rows] token of each gathered row
  std::vector<std::int32_t> row_slot;           ///< [rows] which of the token's k slots it is
  std::vector<std::int32_t> slot_row;           ///< [T, k] gathered row of each (token, slot); -1 if none
  std::vector<std::int32_t> slot_position;      ///< [T, k] place in its expert's buffer; -1 if dropped/empty
  std::vector<float> slot_weight;               ///< [T, k] combine weight of each slot (the router's; 0 if no row)
  std::vector<std::int32_t> routed_per_expert;  ///< [E] pairs routed to each expert before capacity
  index_t dropped = 0;      ///< (token, slot) pairs over capacity: zero output, the residual carries them
  index_t empty_slots = 0;  ///< slots the selection left empty on purpose (GShard's random second)

  index_t rows() const noexcept { return offsets.empty() ? 0 : offsets.back(); }
  index_t first_row(index_t e) const noexcept { return offsets[std::size_t(e)]; }
  index_t kept(index_t e) const noexcept { return offsets[std::size_t(e + 1)] - offsets[std::size_t(e)]; }
  bool slot_dropped(index_t t, int j) const noexcept { return slot_row[std::size_t(t * k + j)] < 0; }
};

/// What building a plan needs besides the plan itself; reused across calls.
struct PlanScratch {
  std::vector<std::int32_t> order;  ///< [T·k] visiting order of (token, slot) pairs
  std::vector<std::int32_t> count;  ///< [E] rows given to each expert so far
};

/// Builds the plan into `p` (its buffers reused: no allocation once they
/// have grown): visits pairs in priority order, gives each a place in its
/// expert's buffer while capacity lasts, then lays the kept pairs out
/// expert by expert (counting sort: two passes, no comparison sort of rows).
inline void build_plan(const Routing& r, std::optional<index_t> capacity, Priority priority, RoutingPlan& p,
                       PlanScratch& scratch) {
  p.tokens = r.tokens;
  p.experts = r.experts;
  p.k = r.k;
  p.capacity = capacity;
  p.dropped = 0;
  p.empty_slots = 0;
  const index_t T = r.tokens, E = r.experts;
  const int k = r.k;
  const std::size_t pairs = std::size_t(T * k);
  detail::require(T * k < index_t(INT32_MAX), ErrorCode::invalid_argument, "build_plan: ", T, " tokens × ", k,
                  " slots do not fit the plan's int32 rows");

  // Visiting order of pairs, as indices t*k + j.
  std::vector<std::int32_t>& order = scratch.order;
  order.resize(pairs);
  {
    std::size_t n = 0;
    for (int j = 0; j < k; ++j)
      for (index_t t = 0; t < T; ++t) order[n++] = std::int32_t(t * k + j);
  }
  if (priority == Priority::router_score) {
    const auto score = [&](std::int32_t pair) {
      const std::int32_t e = r.expert[std::size_t(pair)];
      return e < 0 ? -1.0f : r.prob(pair / k, e);
    };
    for (int j = 0; j < k; ++j) {
      auto first = order.begin() + std::ptrdiff_t(j * T), last = first + std::ptrdiff_t(T);
      std::stable_sort(first, last, [&](std::int32_t a, std::int32_t b) { return score(a) > score(b); });
    }
  }

  p.slot_position.assign(pairs, -1);
  p.routed_per_expert.assign(std::size_t(E), 0);
  std::vector<std::int32_t>& count = scratch.count;
  count.assign(std::size_t(E), 0);
  for (const std::int32_t pair : order) {
    const std::int32_t e = r.expert[std::size_t(pair)];
    if (e == no_expert) {
      ++p.empty_slots;
      continue;
    }
    ++p.routed_per_expert[std::size_t(e)];
    if (capacity && count[std::size_t(e)] >= *capacity) {
      ++p.dropped;
      continue;
    }
    p.slot_position[std::size_t(pair)] = count[std::size_t(e)]++;
  }

  p.offsets.assign(std::size_t(E + 1), 0);
  for (index_t e = 0; e < E; ++e) p.offsets[std::size_t(e + 1)] = p.offsets[std::size_t(e)] + count[std::size_t(e)];
  p.row_token.resize(std::size_t(p.rows()));
  p.row_slot.resize(std::size_t(p.rows()));
  p.slot_row.assign(pairs, -1);
  p.slot_weight.assign(pairs, 0.0f);
  for (index_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      const std::size_t pair = std::size_t(t * k + j);
      if (p.slot_position[pair] < 0) continue;
      const index_t row = p.offsets[std::size_t(r.expert[pair])] + p.slot_position[pair];
      p.slot_row[pair] = std::int32_t(row);
      p.slot_weight[pair] = r.weight[pair];
      p.row_token[std::size_t(row)] = std::int32_t(t);
      p.row_slot[std::size_t(row)] = std::int32_t(j);
    }
}

/// The same, returning a fresh plan.
inline RoutingPlan build_plan(const Routing& r, std::optional<index_t> capacity, Priority priority) {
  RoutingPlan p;
  PlanScratch scratch;
  build_plan(r, capacity, priority, p, scratch);
  return p;
}

}  // namespace moe
