// expect: NoisePolicy
// Says it perturbs the logits but has no perturb_logits/backward_logits.
#include <moe/moe.hpp>
struct SaysNoisy {
  static constexpr bool perturbs_input = false;
  static constexpr bool perturbs_logits = true;
  static constexpr bool needs_weight = false;
  void validate() const {}
};
moe::Router<moe::TopK<2>, SaysNoisy> router;
int main() {}
