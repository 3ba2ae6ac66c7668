// 01: Routing four tokens by hand.
//
// A Mixture-of-Experts layer replaces one big feed-forward network with E
// smaller ones (experts) and a router. The router is a single linear map,
// logits = x · Wgᵀ, one logit per expert. Each token goes to the k experts
// with the largest logits; Mixtral takes k = 2 of E = 8.
//
// Here: 4 tokens, 3 features, 4 experts, top-2. We compute the logits
// ourselves, let moe route, and read the RoutingPlan: the experts' work
// lists, laid out expert by expert (a counting sort), which is what the
// backends compute on.
#include <moe/moe.hpp>

#include "../check.hpp"

int main() {
  // Router weight: expert e "likes" direction e (the 4th likes all equally).
  moe::Matrix gate(4, 3);
  gate << 1, 0, 0,  //
      0, 1, 0,      //
      0, 0, 1,      //
      0.5f, 0.5f, 0.5f;
  moe::Matrix x(4, 3);
  x << 2.0f, 0.1f, 0.0f,  // mostly feature 0
      0.0f, 1.0f, 0.9f,   // features 1 and 2
      1.0f, 1.0f, 1.0f,   // everything
      0.0f, 0.0f, -1.0f;  // negative feature 2

  const moe::Router<moe::TopK<2>> router;
  const moe::Routing r = router.route(x, {moe::weight_view(gate.data(), 4, 3), {}}, {});
  const moe::RoutingPlan plan = moe::build_plan(r, std::nullopt, moe::Priority::token_order);

  std::printf("token  logits (e0..e3)              → experts (weights)\n");
  for (int t = 0; t < 4; ++t) {
    std::printf("  %d   ", t);
    for (int e = 0; e < 4; ++e) std::printf("%6.2f ", r.logit(t, e));
    std::printf("  → e%d (%.3f), e%d (%.3f)\n", r.expert_at(t, 0), r.weight_at(t, 0), r.expert_at(t, 1),
                r.weight_at(t, 1));
  }
  std::printf("plan: expert e owns gathered rows offsets[e] .. offsets[e+1]\n");
  for (int e = 0; e < 4; ++e) {
    std::printf("  expert %d: tokens", e);
    for (auto row = plan.offsets[std::size_t(e)]; row < plan.offsets[std::size_t(e + 1)]; ++row)
      std::printf(" %d", plan.row_token[std::size_t(row)]);
    std::printf("\n");
  }

  const moe::Matrix logits = x * gate.transpose();  // what the router computes
  bool logits_ok = true;
  for (int t = 0; t < 4; ++t)
    for (int e = 0; e < 4; ++e) logits_ok = logits_ok && example::near(r.logit(t, e), logits(t, e));
  example::expect(logits_ok, "logits are x · Wgᵀ");
  example::expect(r.expert_at(0, 0) == 0 && r.expert_at(0, 1) == 3, "token 0 goes to e0, then e3");
  // Token 2: e3 has logit 1.5, e0, e1 and e2 tie at 1.0; ties go to the lower id.
  example::expect(r.expert_at(2, 0) == 3 && r.expert_at(2, 1) == 0, "token 2: e3, then the tie goes to e0");
  example::expect(plan.rows() == 8, "4 tokens × 2 slots = 8 rows of expert work");
  return example::verdict();
}
