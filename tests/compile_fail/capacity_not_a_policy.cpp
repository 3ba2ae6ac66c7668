// expect: CapacityPolicy
// A capacity rule without priority(): the plan could not order its drops.
#include <moe/moe.hpp>
struct FixedCapacity {
  std::optional<moe::index_t> capacity(moe::PlanShape, moe::Mode) const { return 4; }
  void validate() const {}
};
using Layer = moe::MoELayer<moe::Router<moe::TopK<2>>, moe::Expert<moe::SwiGLU>, FixedCapacity, moe::NoLoss>;
Layer* layer = nullptr;
int main() {}
