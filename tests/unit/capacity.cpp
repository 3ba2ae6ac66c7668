// Capacity rules and the routing plan (counting sort, priorities, drops).
#include "test_support.hpp"

using namespace moe;
using test::require_error;

namespace {
/// A routing with the given choices and probabilities (probs: [T, E]).
Routing make_routing(index_t E, int k, std::vector<std::int32_t> expert, std::vector<float> probs) {
  Routing r;
  r.experts = E;
  r.k = k;
  r.tokens = index_t(expert.size()) / k;
  r.expert = std::move(expert);
  r.probs = std::move(probs);
  r.weight.assign(r.expert.size(), 1.0f);
  r.logits = r.probs;
  return r;
}
}  // namespace

TEST_CASE("CapacityFactor: C = max(min, ceil(cf·T·k/E)) per mode") {
  const CapacityFactor switch_rule{.train = 1.0, .eval = 2.0, .min = 0};
  CHECK(switch_rule.capacity({33, 4, 1}, Mode::train) == 9);  // golden switch_s20
  CHECK(switch_rule.capacity({33, 4, 1}, Mode::eval) == 17);
  CHECK(CapacityFactor{.train = 0.5, .eval = 0.5, .min = 0}.capacity({33, 4, 1}, Mode::eval) == 5);
  CHECK(CapacityFactor{.train = 0.25, .eval = 0.25, .min = 5}.capacity({33, 4, 1}, Mode::eval) == 5);
  CHECK(CapacityFactor{.train = 1.5, .eval = 1.5, .min = 0}.capacity({33, 8, 1}, Mode::eval) == 7);
  CHECK(CapacityFactor{.train = 1.0, .eval = 1.0, .min = 0}.capacity({32, 8, 1}, Mode::eval) == 4);  // exact
  CHECK(CapacityFactor{.train = 1.0, .eval = 1.0, .min = 0}.capacity({32, 8, 2}, Mode::eval) == 8);  // counts slots
  CHECK(CapacityFactor{.train = 1.0, .eval = 1.0, .min = 4}.capacity({0, 8, 2}, Mode::eval) == 4);
  CHECK_FALSE(Dropless{}.capacity({100, 8, 2}, Mode::train).has_value());
  require_error([] { CapacityFactor{.train = 0.0}.validate(); }, ErrorCode::invalid_argument, {"train", "> 0"});
  require_error([] { CapacityFactor{.train = 1.0, .eval = -1.0}.validate(); }, ErrorCode::invalid_argument, {"eval"});
  require_error([] { CapacityFactor{.train = 1.0, .eval = 1.0, .min = -1}.validate(); }, ErrorCode::invalid_argument,
                {"min"});
}

TEST_CASE("plan: counting sort by expert, token order within an expert") {
  // T = 5, k = 1, E = 3: experts 2, 0, 2, 1, 2.
  const Routing r = make_routing(3, 1, {2, 0, 2, 1, 2}, std::vector<float>(15, 0.3f));
  const RoutingPlan p = build_plan(r, std::nullopt, Priority::token_order);
  CHECK(p.offsets == std::vector<std::int32_t>{0, 1, 2, 5});
  CHECK(p.row_token == std::vector<std::int32_t>{1, 3, 0, 2, 4});
  CHECK(p.slot_row == std::vector<std::int32_t>{2, 0, 3, 1, 4});
  CHECK(p.slot_position == std::vector<std::int32_t>{0, 0, 1, 0, 2});
  CHECK(p.dropped == 0);
}

TEST_CASE("plan: overflow is dropped and counted, first choices before second choices") {
  // T = 4, k = 2, E = 2; every token picks expert 0 first, expert 1 second,
  // except token 3 (1 then 0). Capacity 2.
  Routing r = make_routing(2, 2, {0, 1, 0, 1, 0, 1, 1, 0}, std::vector<float>(8, 0.5f));
  r.weight = {0.6f, 0.4f, 0.7f, 0.3f, 0.8f, 0.2f, 0.9f, 0.1f};
  const RoutingPlan p = build_plan(r, 2, Priority::token_order);
  // First choices: tokens 0, 1 take expert 0; token 2 is dropped there; token 3 takes expert 1.
  // Second choices: token 0 takes expert 1 (its second place); tokens 1, 2, 3 are dropped.
  CHECK(p.slot_position == std::vector<std::int32_t>{0, 1, 1, -1, -1, -1, 0, -1});
  // The plan carries each kept slot's combine weight (0 where nothing is computed).
  CHECK(p.slot_weight == std::vector<float>{0.6f, 0.4f, 0.7f, 0.0f, 0.0f, 0.0f, 0.9f, 0.0f});
  // Built again into the same plan (buffers reused), it is the same plan.
  RoutingPlan again = p;
  PlanScratch scratch;
  build_plan(r, 2, Priority::token_order, again, scratch);
  CHECK(again.slot_row == p.slot_row);
  CHECK(again.dropped == p.dropped);
  CHECK(p.dropped == 4);
  CHECK(p.routed_per_expert == std::vector<std::int32_t>{4, 4});
  CHECK(p.kept(0) == 2);
  CHECK(p.kept(1) == 2);
  const RoutingStats s = make_stats(r, p);
  CHECK(s.dropped_slots == 4);
  CHECK(s.dropped_tokens == 1);  // token 2 lost both slots
  CHECK(s.dropped_fraction() == doctest::Approx(0.5));
}

TEST_CASE("plan: priority by router score visits higher probabilities first, ties by token") {
  // T = 4, k = 1, E = 2, all to expert 0, capacity 2; probabilities 0.6 0.9 0.6 0.95.
  const Routing r = make_routing(2, 1, {0, 0, 0, 0}, {0.6f, 0.4f, 0.9f, 0.1f, 0.6f, 0.4f, 0.95f, 0.05f});
  const RoutingPlan by_token = build_plan(r, 2, Priority::token_order);
  CHECK(by_token.slot_position == std::vector<std::int32_t>{0, 1, -1, -1});
  const RoutingPlan by_score = build_plan(r, 2, Priority::router_score);
  CHECK(by_score.slot_position == std::vector<std::int32_t>{-1, 1, -1, 0});
  const RoutingPlan roomy = build_plan(r, 3, Priority::router_score);
  CHECK(roomy.slot_position == std::vector<std::int32_t>{2, 1, -1, 0});  // tie 0.6: token 0 before 2
}

TEST_CASE("plan: empty slots are neither routed nor dropped") {
  const Routing r = make_routing(3, 2, {0, no_expert, 1, 2}, std::vector<float>(6, 0.3f));
  const RoutingPlan p = build_plan(r, std::nullopt, Priority::token_order);
  CHECK(p.empty_slots == 1);
  CHECK(p.dropped == 0);
  CHECK(p.rows() == 3);
  CHECK(p.slot_row[1] == -1);
}

TEST_CASE("stats: router entropy is log E for a uniform router, 0 for a certain one, any scoring") {
  Routing r;
  r.tokens = 2;
  r.experts = 4;
  r.k = 1;
  r.probs = {0.25f, 0.25f, 0.25f, 0.25f, 0.5f, 0.5f, 0.5f, 0.5f};  // row 2: sigmoid scores, sum 2
  r.expert = {0, 1};
  r.weight = {1.0f, 1.0f};
  r.logits = r.probs;
  const RoutingPlan p = build_plan(r, std::nullopt, Priority::token_order);
  CHECK(make_stats(r, p).router_entropy == doctest::Approx(std::log(4.0)));
  r.probs = {1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f, 0.0f};
  CHECK(make_stats(r, p).router_entropy == doctest::Approx(0.0));
}
