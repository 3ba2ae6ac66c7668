// expect: RoutingPolicy
// A hand-written router with the old by-value route() but no route into a
// reused Routing, and no slots(): the layer rejects it at the concept.
#include <moe/moe.hpp>
struct OldRouter {
  static constexpr int top_k = 2;
  static constexpr bool needs_noise_weight = false;
  moe::Routing route(moe::MatrixView<const float>, const moe::RouterWeights&, const moe::RouteContext&) const {
    return {};
  }
  void validate(const moe::RouterWeights&, moe::index_t, moe::index_t) const {}
};
using Layer = moe::MoELayer<OldRouter, moe::Expert<moe::SwiGLU>, moe::Dropless, moe::NoLoss>;
Layer* layer = nullptr;
int main() {}
