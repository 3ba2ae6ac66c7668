// Uses moe through `find_package(moe)` and `#include <moe/moe.hpp>` only.
// Prints which kernels the layer ran and the best this CPU has (run.cmake
// compares them).
#include <moe/moe.hpp>
#include <moe/io/safetensors.hpp>

#include <cstdio>

int main() {
  const moe::LayerConfig config{.d_model = 32, .d_ff = 64, .num_experts = 8, .seed = 1};
  const moe::WeightStore weights = moe::WeightStore::random(config, true, moe::DType::BF16, 2);
  const auto layer = moe::make_layer<moe::presets::Mixtral>(config, weights.view());
  const auto reference = moe::make_layer<moe::presets::Mixtral, moe::backend::Reference>(config, weights.view());
  moe::Matrix x = moe::Matrix::Ones(5, 32);
  const moe::Output out = layer.forward(x);
  const float diff = (out.y - reference.forward(x).y).cwiseAbs().maxCoeff();
  const bool ok = out.y.allFinite() && diff < 1e-5f && out.stats.computed_per_expert.size() == 8;
  using Kernels = decltype(layer)::backend_type::isa_type;  // the instruction set the layer's kernels use
  std::printf("kernels: %s; CPU: %s\n", Kernels::name.data(), moe::isa::name(moe::isa::cpu_level()).data());
  std::printf("moe %d.%d.%d consumer: %s\n", moe::version_major, moe::version_minor, moe::version_patch,
              ok ? "PASSED" : "FAILED");
  return ok ? 0 : 1;
}
