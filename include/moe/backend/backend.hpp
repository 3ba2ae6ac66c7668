#pragma once
/// \file backend.hpp
/// The execution contract: what every backend implements and all that
/// MoELayer asks of one. The layer composes the stages and validates; it
/// never branches on which backend runs them.
///
/// Once, when a layer is built (and again when asked to pack):
///
///   Prepared p = b.prepare(experts, PrepareOptions)   the backend's own, owned form of
///                                                     the expert weights: views, packed
///                                                     panels, bf16/int8 copies, later a
///                                                     device upload or a local shard
///
/// Each forward call, on views in the backend's memory space, with the
/// call's Workspace (sized by the backend, reused: no allocation once grown):
///
///   b.route(router, x, router_weights, ctx, routing, scratch, ws)  x → logits, choices, weights
///   b.plan(routing, capacity, priority, plan, scratch, ws)         → RoutingPlan (flat int32/float)
///   b.gather(plan, x, rows, ws)                                    x[token of row] → rows
///   b.experts<X>(plan, p, rows, rows_out, ws, dropout)            expert X on each expert's rows
///   b.combine(plan, rows_out, y, ws)                               y[t] = Σ_j w[t,j]·rows_out[row(t,j)]
///
/// and backward, the same line in reverse (trainable backends):
///
///   b.combine_backward(plan, rows_out, dy, d_weight, d_rows, ws)   dL/d slot weight, dL/d rows_out
///   b.experts_backward<X>(plan, p, rows, d_rows, ws, dropout, grads, d_rows_in)
///   b.gather_backward(plan, d_rows_in, dx, ws)                     dx[t] += Σ_j d_rows_in[row(t,j)]
///
/// Every stage gets the call's backend workspace `ws`: where a backend keeps
/// what one call carries from stage to stage beyond the plan (a device
/// backend: the plan's copy in device memory, its stream, the router's
/// logits). Host backends need nothing there but the expert rows.
///
/// combine sums each token's slots in slot order, so y does not depend on
/// how rows were scheduled: no atomics, the same bits on any thread count.
/// Adding a backend is a new file implementing these; nothing in layer/
/// changes (backend::EigenGemm is one, in eigen_gemm.hpp; backend::Cuda, in
/// cuda.cuh, runs them on a GPU on memory::Device views and names its own
/// output matrix, B::matrix_type).

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "moe/capacity/plan.hpp"
#include "moe/core/view.hpp"
#include "moe/expert/dropout.hpp"
#include "moe/expert/expert.hpp"
#include "moe/expert/gradients.hpp"
#include "moe/routing/router.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// How a backend prepares expert weights.
struct PrepareOptions {
  /// Copy the weights into the backend's fast layout (backend::Cpu: panels)
  /// at the cost of that copy. Off: compute on the views where the numerics
  /// allow it (a numerics that converts the weights always copies).
  bool pack = false;
};

/// What any preparation records about where it came from.
struct PreparedFrom {
  std::uint64_t version = 0;  ///< the weights' WeightVersion when prepared
  bool holds_copy = false;    ///< computes from a copy: stale once the weights change
};

/// A backend's prepared form of the experts: at least its origin and its cost.
template <class P>
concept PreparedWeights = requires(const P& p) {
  { p.from } -> std::convertible_to<PreparedFrom>;
  { p.bytes() } -> std::convertible_to<std::size_t>;  ///< memory held beyond the views (0 for views)
};

/// A backend's per-call buffers: expert input and output rows in its memory
/// space, grown to the largest call and reused. input_rows/output_rows
/// return views of at least [rows, d]; asking again for no more rows returns
/// the same memory with its contents (backward reads what forward wrote).
template <class W, class Space>
concept BackendWorkspace = std::default_initializable<W> && requires(W& w, index_t n) {
  { w.input_rows(n, n) } -> std::same_as<MatrixView<float, Space>>;
  { w.output_rows(n, n) } -> std::same_as<MatrixView<float, Space>>;
};

/// Placeholder router and expert used to state the concepts (any router
/// and expert policy would do; these are the simplest).
namespace detail::contract {
using AnyRouter = Router<TopK<1>>;
using AnyExpert = Expert<SwiGLU>;
}  // namespace detail::contract

/// A backend: the stages of a forward call over the views of its memory space.
template <class B>
concept BackendPolicy = memory::Space<typename B::memory_space> && PreparedWeights<typename B::Prepared> &&
    BackendWorkspace<typename B::Workspace, typename B::memory_space> &&
    requires(const B& b, std::span<const ExpertWeights> w, const typename B::Prepared& prepared,
             typename B::Workspace& ws, const detail::contract::AnyRouter& router, const RouterWeights& rw,
             const RouteContext& ctx, Routing& routing, RouterScratch& route_scratch, const RoutingPlan& cplan,
             RoutingPlan& plan, PlanScratch& plan_scratch, std::optional<index_t> capacity,
             MatrixView<const float, typename B::memory_space> in, MatrixView<float, typename B::memory_space> out,
             const ExpertDropout& drop) {
  { B::name() } -> std::convertible_to<std::string_view>;
  { b.prepare(w, PrepareOptions{}) } -> std::same_as<typename B::Prepared>;
  b.route(router, in, rw, ctx, routing, route_scratch, ws);
  b.plan(routing, capacity, Priority::token_order, plan, plan_scratch, ws);
  b.gather(cplan, in, out, ws);
  b.template experts<detail::contract::AnyExpert>(cplan, prepared, in, out, ws, drop);
  b.combine(cplan, in, out, ws);
};

namespace detail {
template <class B>
struct backend_matrix {
  using type = Matrix;
};
template <class B>
requires requires { typename B::matrix_type; }
struct backend_matrix<B> {
  using type = typename B::matrix_type;
};
}  // namespace detail

/// The owning matrix a backend's layer output comes back in: moe::Matrix,
/// unless the backend names its own (`B::matrix_type`, in its memory space).
template <class B>
using backend_matrix_t = typename detail::backend_matrix<B>::type;

/// A backend that can train: the backward of every stage.
template <class B>
concept TrainableBackend = BackendPolicy<B> &&
    requires(const B& b, const typename B::Prepared& prepared, typename B::Workspace& ws, const RoutingPlan& plan,
             MatrixView<const float, typename B::memory_space> in, MatrixView<float, typename B::memory_space> out,
             std::span<float> d_weight, const ExpertDropout& drop, std::span<ExpertGrads> grads) {
  b.combine_backward(plan, in, in, d_weight, out, ws);
  b.template experts_backward<detail::contract::AnyExpert>(plan, prepared, in, in, ws, drop, grads, out);
  b.gather_backward(plan, in, out, ws);
};

/// A backend that also runs dense layers (attention projections, lm_head):
/// out[T, N] = x[T, K] · Wᵀ for W [N, K] of any weight dtype.
template <class B>
concept LinearBackend = BackendPolicy<B> &&
    requires(const B& b, MatrixView<const float, typename B::memory_space> x,
             const WeightMatrixIn<typename B::memory_space>& w, MatrixView<float, typename B::memory_space> out) {
  b.linear(x, w, out);
};

}  // namespace moe
