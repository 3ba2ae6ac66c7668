// expect: ScoringPolicy
// A scoring policy whose parameters the layer could not check (no validate()).
#include <moe/moe.hpp>
struct Unchecked {
  static constexpr std::string_view name = "unchecked";
  void probabilities(const float*, moe::index_t, float*) const {}
  void weights(const float*, const float*, const std::int32_t*, int, float*) const {}
  void weights_backward(const float*, const float*, const std::int32_t*, int, const float*, const float*, float*,
                        float*) const {}
  void probabilities_backward(const float*, const float*, const float*, moe::index_t, float*) const {}
};
moe::Router<moe::TopK<2>, moe::NoNoise, Unchecked> router;
int main() {}
