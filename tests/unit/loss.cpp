// Balance losses: each anchor's constant pinned, values against hand sums.
#include "test_support.hpp"

#include <cmath>

using namespace moe;
using test::require_error;

namespace {
/// Routes x with equal logits for every expert (a perfectly uniform router)
/// but a balanced assignment: token t's slots go to experts t, t+1, ... mod E.
Routing uniform_routing(index_t T, index_t E, int k) {
  Routing r;
  r.tokens = T;
  r.experts = E;
  r.k = k;
  r.logits.assign(std::size_t(T * E), 0.0f);
  r.clean_logits = r.logits;
  r.probs.assign(std::size_t(T * E), 1.0f / float(E));
  for (index_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      r.expert.push_back(std::int32_t((t + j) % E));
      r.weight.push_back(1.0f / float(k));
    }
  return r;
}
}  // namespace

TEST_CASE("SwitchBalanceLoss: a balanced router scores k (every slot, HF Mixtral) or 1 (top-1, Switch)") {
  for (int k : {1, 2, 4}) {
    const Routing r = uniform_routing(64, 8, k);
    const RoutingPlan p = build_plan(r, std::nullopt, Priority::token_order);
    CHECK(SwitchBalanceLoss{.counting = SlotCounting::every_slot}.value(r, p) == doctest::Approx(k));
    CHECK(SwitchBalanceLoss{.counting = SlotCounting::top1}.value(r, p) == doctest::Approx(1.0));
  }
}

TEST_CASE("SwitchBalanceLoss: collapse onto one expert scores E·p, and the HF quirk counts drops as expert 0") {
  // T = 4, E = 4, k = 1, everyone to expert 3 with p = 0.7 there.
  Routing r;
  r.tokens = 4;
  r.experts = 4;
  r.k = 1;
  for (int t = 0; t < 4; ++t) {
    r.probs.insert(r.probs.end(), {0.1f, 0.1f, 0.1f, 0.7f});
    r.expert.push_back(3);
    r.weight.push_back(0.7f);
  }
  r.logits = r.probs;
  const RoutingPlan dropless = build_plan(r, std::nullopt, Priority::token_order);
  CHECK(SwitchBalanceLoss{.counting = SlotCounting::top1}.value(r, dropless) == doctest::Approx(4 * 0.7));
  // Capacity 1: three tokens dropped. The paper still counts them at expert 3;
  // HF's post-capacity mask counts them at expert 0: f = (3/4, 0, 0, 1/4).
  const RoutingPlan tight = build_plan(r, 1, Priority::token_order);
  CHECK(SwitchBalanceLoss{.counting = SlotCounting::top1}.value(r, tight) == doctest::Approx(4 * 0.7));
  CHECK(SwitchBalanceLoss{.counting = SlotCounting::top1_hf_quirk}.value(r, tight) ==
        doctest::Approx(4 * (0.75 * 0.1 + 0.25 * 0.7)));
  require_error([] { SwitchBalanceLoss{.alpha = -1.0f}.validate(); }, ErrorCode::invalid_argument, {"alpha"});
}

TEST_CASE("RouterZLoss: mean squared logsumexp; zero logits give (log E)²") {
  const Routing r = uniform_routing(10, 8, 2);
  CHECK(RouterZLoss{}.value(r) == doctest::Approx(std::log(8.0) * std::log(8.0)));
  Routing s = r;
  s.logits[0] = 3.0f;  // token 0: lse = log(7 + e³)
  const double lse0 = std::log(7.0 + std::exp(3.0)), lse = std::log(8.0);
  CHECK(RouterZLoss{}.value(s) == doctest::Approx((lse0 * lse0 + 9 * lse * lse) / 10));
}

TEST_CASE("ImportanceLoadLoss: zero when balanced, CV² otherwise") {
  const Routing r = uniform_routing(64, 8, 2);
  const RoutingPlan p = build_plan(r, std::nullopt, Priority::token_order);
  LossValues s;
  CHECK(ImportanceLoadLoss{}.evaluate(r, p, s) == doctest::Approx(0.0));
  CHECK(*s.get("importance") == doctest::Approx(0.0));
  // Everyone on expert 0 of 4: importance (T, 0, 0, 0) → CV² = var/mean² = 3.
  Routing c = uniform_routing(8, 4, 1);
  for (auto& e : c.expert) e = 0;
  CHECK(ImportanceLoadLoss::cv_squared(ImportanceLoadLoss::importance(c)) == doctest::Approx(3.0));
  CHECK(ImportanceLoadLoss::cv_squared(ImportanceLoadLoss::load(c)) == doctest::Approx(3.0));
}

TEST_CASE("ImportanceLoadLoss: the smooth load is Φ((clean − threshold)/std)") {
  // One token, E = 3, k = 1; noisy logits (1.0, 0.5, 0.2), clean (0.8, 0.6, 0.0), std 1.
  Routing r;
  r.tokens = 1;
  r.experts = 3;
  r.k = 1;
  r.logits = {1.0f, 0.5f, 0.2f};
  r.clean_logits = {0.8f, 0.6f, 0.0f};
  r.noise_std = {1.0f, 1.0f, 1.0f};
  r.expert = {0};
  r.weight = {1.0f};
  const auto Phi = [](double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); };
  const std::vector<double> load = ImportanceLoadLoss::load(r);
  CHECK(load[0] == doctest::Approx(Phi(0.8 - 0.5)));  // in the top-1: threshold is the next best
  CHECK(load[1] == doctest::Approx(Phi(0.6 - 1.0)));  // out: threshold is the k-th best
  CHECK(load[2] == doctest::Approx(Phi(0.0 - 1.0)));
}

TEST_CASE("Losses<A, B> sums the weighted parts and records each raw value") {
  const Routing r = uniform_routing(16, 4, 2);
  const RoutingPlan p = build_plan(r, std::nullopt, Priority::token_order);
  const Losses<SwitchBalanceLoss, RouterZLoss> both(SwitchBalanceLoss{.alpha = 0.5f}, RouterZLoss{.beta = 0.25f});
  LossValues s;
  const float total = both.evaluate(r, p, s);
  REQUIRE(s.get("balance"));
  REQUIRE(s.get("z"));
  CHECK(*s.get("balance") == doctest::Approx(2.0));
  CHECK(total == doctest::Approx(0.5 * 2.0 + 0.25 * std::log(4.0) * std::log(4.0)));
  CHECK_FALSE(s.get("importance"));
  CHECK(s.entries().size() == 2);
  // A value reported again replaces the first; more names than the table holds is an error, not an overflow.
  s.set("z", 1.0f);
  CHECK(*s.get("z") == 1.0f);
  CHECK(s.entries().size() == 2);
  for (const char* name : {"a", "b", "c", "d", "e", "f"}) s.set(name, 0.0f);
  test::require_error([&] { s.set("one too many", 0.0f); }, ErrorCode::invalid_argument,
                      {"more than 8 losses", "one too many"});
}
