// 08: Backends side by side.
//
// The backend is the last template parameter of MoELayer and is chosen at
// compile time. backend::Reference is plain loops, one token at a time,
// written to be read. backend::Cpu runs xsimd kernels on all cores: it
// splits the work into (expert, block of 32 output features) tiles so both
// cores stay busy even when one expert gets most tokens, and widens bf16
// weights block by block into fp32.
//
// backend::EigenGemm runs each expert's rows as three Eigen GEMMs: a whole
// backend in one file (include/moe/backend/eigen_gemm.hpp), because a
// backend is only the stages of the execution contract (backend.hpp):
// prepare the weights, route, plan, gather, experts, combine.
//
// Routing is computed by the same code for every backend, so the decisions
// are identical; the expert outputs agree to float rounding. The CPU
// kernels' instruction set is a type too: Cpu<Numerics, Isa>, here the
// build's native one and AVX2 forced. (This is a lesson, not a benchmark:
// see bench/ for measurements.)
#include <moe/moe.hpp>

#include <chrono>
#include <string>

#include "../check.hpp"

namespace {
template <class Layer>
double seconds(const Layer& layer, const moe::Matrix& x, moe::Output& out) {
  const auto t0 = std::chrono::steady_clock::now();
  out = layer.forward(x);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main() {
  const moe::LayerConfig config{.d_model = 256, .d_ff = 512, .num_experts = 8, .seed = 2};
  const moe::WeightStore weights = moe::WeightStore::random(config, true, moe::DType::BF16, 4);
  const moe::Matrix x = moe::random_normal_matrix(64, 256, 4);

  const auto reference = moe::make_layer<moe::presets::Mixtral, moe::backend::Reference>(config, weights.view());
  const auto cpu = moe::make_layer<moe::presets::Mixtral, moe::backend::Cpu<>>(config, weights.view());
  moe::Output a, b;
  const double ta = seconds(reference, x, a), tb = seconds(cpu, x, b);
  const float diff = (a.y - b.y).cwiseAbs().maxCoeff() / a.y.cwiseAbs().maxCoeff();
  std::printf("reference: %.1f ms, cpu (%d threads): %.1f ms, max relative difference %.2e\n", 1e3 * ta,
              cpu.backend().threads(), 1e3 * tb, diff);
  example::expect(a.routing.expert == b.routing.expert && a.plan.slot_row == b.plan.slot_row,
                  "identical routing decisions and plans");
  example::expect(diff < 1e-5f, "outputs agree to float rounding");
  example::expect(a.stats.computed_per_expert == b.stats.computed_per_expert, "identical statistics");

  const auto eigen = moe::make_layer<moe::presets::Mixtral, moe::backend::EigenGemm>(config, weights.view());
  moe::Output c;
  const double tc = seconds(eigen, x, c);
  const float eigen_diff = (a.y - c.y).cwiseAbs().maxCoeff() / a.y.cwiseAbs().maxCoeff();
  std::printf("eigen-gemm: %.1f ms (bf16 experts widened once when prepared: %.1f KiB), max relative difference %.2e\n",
              1e3 * tc, double(eigen.prepared().bytes()) / 1024, eigen_diff);
  example::expect(eigen_diff < 1e-5f, "EigenGemm agrees to float rounding");

  // The same layer with the kernels of each instruction set this program carries and this CPU runs.
  for (const moe::isa::Level level : moe::isa::available_levels())
    moe::isa::with_isa(level, [&]<class I>() {
      const auto on = moe::make_layer<moe::presets::Mixtral>(config, weights.view(),
                                                             moe::backend::Cpu<moe::numerics::AsStored, I>());
      const float d = (a.y - on.forward(x).y).cwiseAbs().maxCoeff() / a.y.cwiseAbs().maxCoeff();
      std::printf("cpu on %-12s max relative difference %.2e\n", std::string(I::name).c_str(), d);
      example::expect(d < 1e-5f, "every instruction set agrees to float rounding");
    });
  return example::verdict();
}
