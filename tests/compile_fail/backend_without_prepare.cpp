// expect: BackendPolicy
// A backend with the stages but no prepare(): it cannot own its weights.
#include <moe/moe.hpp>
struct NoPrepare : moe::backend::HostStages {
  using Prepared = moe::backend::PreparedViews;
  using Workspace = moe::backend::HostRows;
  static constexpr std::string_view name() { return "no-prepare"; }
  template <moe::ExpertPolicy X>
  void experts(const moe::RoutingPlan&, const Prepared&, moe::MatrixView<const float>, moe::MatrixView<float>,
               Workspace&, const moe::ExpertDropout&) const {}
};
using Layer = moe::MoELayer<moe::Router<moe::TopK<2>>, moe::Expert<moe::SwiGLU>, moe::Dropless, moe::NoLoss, NoPrepare>;
Layer* layer = nullptr;
int main() {}
