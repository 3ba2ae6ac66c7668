// Every ```cuda block of README.md, compiled here (a MOE_ENABLE_CUDA build)
// and run where a GPU is present, like tests/readme/snippets.cpp does for
// the C++ blocks. Without a device the blocks are compiled only, and the
// program says so and exits 77 (ctest: skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <moe/backend/cuda.cuh>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {
std::set<std::string> wrapped;  // the blocks a function below includes
const moe::LayerConfig small{.d_model = 32, .d_ff = 64, .num_experts = 8, .seed = 1};

/// README cuda_layer: returns the y the block computes.
moe::Matrix cuda_layer(const moe::LayerConfig& config, const moe::LayerWeights& weights, cudaStream_t stream,
                       const moe::Matrix& x_host) {
#include "readme/cuda_layer.inc"
  return y;
}
}  // namespace

TEST_CASE("README cuda_layer: the Mixtral preset on the GPU, y as the reference backend's") {
  wrapped.insert("cuda_layer");
  const moe::WeightStore store = moe::WeightStore::random(small, true, moe::DType::BF16, 3);
  const moe::Matrix x = moe::random_normal_matrix(16, small.d_model, 4);
  cudaStream_t stream = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreate(&stream));
  const moe::Matrix y = cuda_layer(small, store.view(), stream, x);
  MOE_CUDA_CHECK(cudaStreamDestroy(stream));
  const auto ref = moe::make_layer<moe::presets::Mixtral, moe::backend::Reference>(small, store.view());
  CHECK(moe::test::max_abs_diff(ref.forward(x).y, y) <= 1e-2f);
}

TEST_CASE("every README CUDA block is wrapped by a test case above") {
  const std::vector<std::string> in_readme{
#include "readme/cuda_names.inc"
  };
  for (const std::string& name : in_readme)
    CHECK_MESSAGE(wrapped.count(name) == 1, "README.md's CUDA block '", name,
                  "' is not compiled by tests/readme/snippets.cu: include readme/", name, ".inc in a test case");
  CHECK(in_readme.size() == wrapped.size());
}

int main(int argc, char** argv) {
  if (moe::cuda::device_count() == 0) {
    std::printf("no CUDA device here: README's CUDA blocks compiled, not run\n");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
