// expect: deleted
// Views of a temporary WeightStore would dangle: view() on an rvalue is deleted.
#include <moe/moe.hpp>
int main() {
  const moe::LayerConfig c{.d_model = 8, .d_ff = 8, .num_experts = 2};
  auto layer = moe::make_layer<moe::presets::Mixtral>(c, moe::WeightStore::random(c, true, moe::DType::F32, 1).view());
}
