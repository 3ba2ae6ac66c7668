// 06: Balance losses.
//
// Left alone, a router collapses: the experts that start slightly better get
// more tokens, learn faster, and get still more. Auxiliary losses push back.
//
// Switch (Fedus et al. 2021): L = E · Σ_e f_e · P_e, with f_e the share of
// tokens routed to e and P_e the mean router probability of e. It is smallest
// when both are uniform. What f counts differs between systems, and so does
// the value of a perfectly balanced router: HF Mixtral counts all k slots
// (balanced = k), Switch counts first choices (balanced = 1).
//
// ST-MoE's z-loss, mean (logsumexp logits)², keeps logits small so the
// router's softmax stays stable in low precision.
#include <moe/moe.hpp>

#include "../check.hpp"

namespace {
/// A routing of T tokens over E experts where every logit is `logit` and
/// token t's slots go to experts t, t+1, ... (mod E): perfectly balanced.
moe::Routing balanced(moe::index_t T, moe::index_t E, int k, float logit) {
  moe::Routing r;
  r.tokens = T;
  r.experts = E;
  r.k = k;
  r.logits.assign(std::size_t(T * E), logit);
  r.probs.assign(std::size_t(T * E), 1.0f / float(E));
  for (moe::index_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      r.expert.push_back(std::int32_t((t + j) % E));
      r.weight.push_back(1.0f / float(k));
    }
  return r;
}
}  // namespace

int main() {
  const moe::Routing even = balanced(64, 8, 2, 0.0f);
  const moe::RoutingPlan plan = moe::build_plan(even, std::nullopt, moe::Priority::token_order);
  const float hf = moe::SwitchBalanceLoss{.counting = moe::SlotCounting::every_slot}.value(even, plan);
  const float sw = moe::SwitchBalanceLoss{.counting = moe::SlotCounting::top1}.value(even, plan);
  std::printf("balanced top-2 router: HF Mixtral counting %.4f, Switch counting %.4f\n", hf, sw);
  example::expect(example::near(hf, 2.0), "HF Mixtral's loss of a balanced top-2 router is k = 2");
  example::expect(example::near(sw, 1.0), "Switch's loss of a balanced router is 1");

  // Collapse: every token on expert 0 with probability 0.9 there.
  moe::Routing collapsed = balanced(64, 8, 1, 0.0f);
  for (moe::index_t t = 0; t < 64; ++t) {
    collapsed.expert[std::size_t(t)] = 0;
    for (moe::index_t e = 0; e < 8; ++e) collapsed.probs[std::size_t(t * 8 + e)] = e == 0 ? 0.9f : 0.1f / 7;
  }
  const float bad = moe::SwitchBalanceLoss{.counting = moe::SlotCounting::top1}.value(
      collapsed, moe::build_plan(collapsed, std::nullopt, moe::Priority::token_order));
  std::printf("collapsed router: %.4f (= E · 1 · 0.9)\n", bad);
  example::expect(example::near(bad, 8 * 0.9), "collapse costs E · P_max");

  // z-loss grows with the logit scale, not with imbalance.
  const float z_small = moe::RouterZLoss{}.value(balanced(16, 8, 2, 0.0f));
  const float z_large = moe::RouterZLoss{}.value(balanced(16, 8, 2, 10.0f));
  std::printf("z-loss: logits 0 → %.4f, logits 10 → %.4f\n", z_small, z_large);
  example::expect(example::near(z_small, std::log(8.0) * std::log(8.0)), "z-loss of zero logits is (log E)²");
  example::expect(example::near(z_large, (10 + std::log(8.0)) * (10 + std::log(8.0))),
                  "shifting logits by 10 shifts lse by 10");
  return example::verdict();
}
