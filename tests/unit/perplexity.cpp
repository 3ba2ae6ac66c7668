// moe::mixtral::perplexity against transformers' documented recipe
// (tests/cases/make_perplexity_cases.py: the golden tiny checkpoints, seeded
// token ids, disjoint and overlapping windows), loglikelihoods against
// transformers' scores of the same continuations
// (tests/cases/make_loglikelihood_cases.py), and their argument checks.
#include <doctest/doctest.h>

#include <moe/models/mixtral/loglikelihood.hpp>
#include <moe/models/mixtral/perplexity.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
namespace mx = moe::mixtral;

namespace {

/// The `key` array of a JSON file under tests/data/cases.
nlohmann::json cases_in(const std::string& file, const char* key) {
  std::ifstream in(fs::path(MOE_TEST_DATA_DIR) / "cases" / file);
  REQUIRE(in.good());
  return nlohmann::json::parse(in)[key];
}

/// A golden checkpoint, loaded once per test case.
const mx::Model<>& golden(std::map<std::string, std::unique_ptr<mx::Model<>>>& loaded, const std::string& name) {
  auto& model = loaded[name];
  if (!model) model = std::make_unique<mx::Model<>>(fs::path(MOE_TEST_DATA_DIR) / "golden/models" / name);
  return *model;
}

}  // namespace

TEST_CASE("perplexity equals transformers' sliding-window recipe") {
  const nlohmann::json cases = cases_in("perplexity/cases.json", "cases");
  REQUIRE(cases.size() == 10);
  std::map<std::string, std::unique_ptr<mx::Model<>>> models;
  for (const nlohmann::json& c : cases) {
    const std::string name = c["model"];
    const mx::Model<>& model = golden(models, name);
    const std::vector<std::int32_t> ids = c["ids"];
    const mx::PerplexityOptions o{.context = c["context"], .stride = c["stride"]};
    CAPTURE(name);
    CAPTURE(o.context);
    CAPTURE(o.stride);
    moe::index_t reported = 0;
    const mx::PerplexityResult r =
        mx::perplexity(model, ids, o, [&](const mx::PerplexityResult&, moe::index_t) { ++reported; });
    CHECK(r.perplexity() == doctest::Approx(c["perplexity"].get<double>()).epsilon(1e-4));
    CHECK(r.mean_nll() == doctest::Approx(c["mean_nll"].get<double>()).epsilon(1e-5));
    CHECK(reported == r.windows);
    // Every token is scored once, but the first of each window that starts
    // cold (all of them when the windows are disjoint, else only the first).
    const auto n = moe::index_t(ids.size());
    CHECK(r.scored == (o.stride == o.context ? n - r.windows : n - 1));
    CHECK(r.windows == (std::max<moe::index_t>(moe::index_t(ids.size()) - o.context, 0) + o.stride - 1) / o.stride + 1);
  }
}

TEST_CASE("perplexity refuses what it cannot compute") {
  const mx::Model<> model(fs::path(MOE_TEST_DATA_DIR) / "golden/models/mixtral_tiny_f32");
  const std::vector<std::int32_t> ids{1, 2, 3, 4, 5};
  CHECK_THROWS_WITH_AS(mx::perplexity(model, ids, {.context = 4, .stride = 5}),
                       doctest::Contains("1 <= stride <= context"), moe::Error);
  CHECK_THROWS_WITH_AS(mx::perplexity(model, ids, {.context = 1, .stride = 1}), doctest::Contains("context >= 2"),
                       moe::Error);
  CHECK_THROWS_WITH_AS(mx::perplexity(model, std::vector<std::int32_t>{1}, {.context = 4, .stride = 2}),
                       doctest::Contains("at least 2 are needed"), moe::Error);
  CHECK_THROWS_WITH_AS(mx::perplexity(model, ids, {.context = 1 << 30, .stride = 2}),
                       doctest::Contains("longer than the model's"), moe::Error);
}

TEST_CASE("continuation log-likelihoods equal transformers', the context shared by its choices") {
  const nlohmann::json items = cases_in("eval/loglikelihood.json", "items");
  REQUIRE(items.size() == 6);
  std::map<std::string, std::unique_ptr<mx::Model<>>> models;
  for (const nlohmann::json& item : items) {
    const std::string name = item["model"];
    const mx::Model<>& model = golden(models, name);
    const std::vector<std::int32_t> context = item["context"];
    const std::vector<std::vector<std::int32_t>> choices = item["choices"];
    const std::vector<mx::LogLikelihood> ll = mx::loglikelihoods(model, context, choices);
    REQUIRE(ll.size() == choices.size());
    for (std::size_t c = 0; c < choices.size(); ++c) {
      CAPTURE(name);
      CAPTURE(context.size());
      CAPTURE(c);
      CHECK(ll[c].sum == doctest::Approx(item["scores"][c]["sum"].get<double>()).epsilon(1e-5));
      CHECK(ll[c].greedy == item["scores"][c]["greedy"].get<bool>());
      CHECK(ll[c].tokens == moe::index_t(choices[c].size()));
    }
  }
  const mx::Model<>& model = golden(models, "mixtral_tiny_f32");
  CHECK_THROWS_WITH_AS(mx::loglikelihoods(model, std::vector<std::int32_t>{}, {{1}}),
                       doctest::Contains("context is empty"), moe::Error);
  CHECK_THROWS_WITH_AS(mx::loglikelihoods(model, std::vector<std::int32_t>{1}, {{}}),
                       doctest::Contains("an empty continuation"), moe::Error);
}
