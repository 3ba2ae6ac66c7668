// Every ```cpp block of README.md, compiled here and run where it is short,
// so the README cannot drift from the library. tests/readme/extract.cmake
// copies each block (named by the `<!-- snippet: name -->` line before it)
// to readme/<name>.inc in the build folder, with a #line directive: a
// compile error points at the README's own line. Each block is included
// below inside a function that declares what the README's prose assumes
// (an input `x`, a `config`, ...), then the function checks what the block
// claims. A named block with no function here fails the last test case.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/text/chat.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace {

const moe::LayerConfig small{.d_model = 32, .d_ff = 64, .num_experts = 8, .seed = 1};
std::set<std::string> wrapped;  // the blocks a test case below includes

/// Runs `fn` with the working directory at `dir`, restoring it after.
template <class F>
void in_directory(const std::filesystem::path& dir, F&& fn) {
  const auto before = std::filesystem::current_path();
  std::filesystem::current_path(dir);
  try {
    fn();
  } catch (...) {
    std::filesystem::current_path(before);
    throw;
  }
  std::filesystem::current_path(before);
}

}  // namespace

TEST_CASE("README decoder: load, forward, generate, on a tiny checkpoint at path/to/folder") {
  wrapped.insert("decoder");
  const moe::test::TempDir dir("readme-decoder");
  std::filesystem::create_directories(dir.path / "path/to");
  std::filesystem::copy(MOE_TEST_DATA_DIR "/golden/models/mixtral_tiny_f32", dir.path / "path/to/folder");
  in_directory(dir.path, [] {
    const std::vector<std::int32_t> ids{1, 5, 9, 2};
    {
#include "readme/decoder.inc"
      CHECK(out.logits.rows() == 4);
      CHECK(out.logits.cols() == model.config().vocab_size);
      CHECK(out.routing.size() == std::size_t(model.config().num_layers));
      CHECK(result.tokens.size() >= 1);
      CHECK(result.tokens.size() <= 32);
      (void)cache;
    }
  });
}

TEST_CASE("README chat: a folder's chat template applied, and its end marker") {
  wrapped.insert("chat");
  const moe::test::TempDir dir("readme-chat");
  std::filesystem::create_directories(dir.path / "path/to/folder");
  std::ofstream(dir.path / "path/to/folder/tokenizer_config.json") << nlohmann::json{
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"chat_template",
       "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
       "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"}};
  in_directory(dir.path, [] {
#include "readme/chat.inc"
    CHECK(prompt == "<s>[INST] Hi [/INST]");
    CHECK(end == "</s>");
  });
}

TEST_CASE("README layer: a Mixtral-sized layer and its workspace compile (too large to run in a test)") {
  wrapped.insert("layer");
  wrapped.insert("layer_workspace");
  // Declared, never called: 8 experts of 4096 x 14336 in bf16 are 2.8 GB.
  [[maybe_unused]] auto mixtral_sized = [](const moe::Matrix& x, std::uint64_t step) {
#include "readme/layer.inc"
#include "readme/layer_workspace.inc"
    (void)y, (void)w, (void)counts, (void)balance, (void)bytes, (void)o;
  };
}

TEST_CASE("README compose: the policies composed by hand give the Switch-style layer") {
  wrapped.insert("compose");
  const moe::LayerConfig config = small;
  const moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 3);
  const moe::LayerWeights weights = store.view();
#include "readme/compose.inc"
  const moe::Matrix x = moe::random_normal_matrix(40, config.d_model, 4);
  const moe::Output out = layer.forward(x);
  CHECK(out.routing.k == 2);
  CHECK(out.stats.capacity == std::optional<moe::index_t>(std::max<moe::index_t>(4, 20)));  // ceil(2.0·40·2/8)
  REQUIRE(out.stats.loss("balance"));
  REQUIRE(out.stats.loss("z"));
  CHECK(out.stats.weighted_loss == doctest::Approx(0.01f * *out.stats.loss("balance") + 1e-3f * *out.stats.loss("z")));
}

// The policy section's block declares types, so it goes at namespace scope
// (a local class cannot have a static member), with what it assumes before it.
namespace readme_own_policy {
const moe::LayerConfig config = small;
const moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 6);
const moe::LayerWeights weights = store.view();
const moe::Matrix x = moe::random_normal_matrix(200, config.d_model, 6, 2.0f);
#include "readme/own_policy.inc"
}  // namespace readme_own_policy

TEST_CASE("README own policy: the floor empties some second slots, and validate() runs") {
  wrapped.insert("own_policy");
  using namespace readme_own_policy;
  moe::index_t single = 0;
  for (moe::index_t t = 0; t < 200; ++t) {
    if (out.routing.expert_at(t, 1) == moe::no_expert)
      ++single;
    else
      CHECK(out.routing.weight_at(t, 1) >= 0.3f);
  }
  CHECK(single > 0);
  CHECK(single < 200);
  CHECK(out.stats.empty_slots == single);
  moe::test::require_error([] { (void)MyRouter(TopTwoWithFloor{.floor = 1.5f}).validate(weights.router, 8, 32); },
                           moe::ErrorCode::invalid_argument, {"floor must be in [0, 1)"});
}

TEST_CASE("README backend stages: called one by one they give what forward gives") {
  wrapped.insert("backend_stages");
  const moe::LayerConfig config = small;
  const moe::index_t d_model = config.d_model;
  const moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 5);
  const moe::LayerWeights weights = store.view();
  const std::span<const moe::ExpertWeights> experts(weights.experts);
  const moe::RouterWeights& router_weights = weights.router;
  const moe::Router<moe::TopK<2>> router;
  const moe::Matrix x = moe::random_normal_matrix(24, d_model, 6);
  const moe::RouteContext ctx{};
  moe::Routing routing;
  moe::RouterScratch route_scratch;
  const std::optional<moe::index_t> capacity = std::nullopt;
  const moe::Priority priority = moe::Priority::token_order;
  moe::RoutingPlan plan;
  moe::PlanScratch plan_scratch;
  using Expert = moe::Expert<moe::SwiGLU>;
  const moe::ExpertDropout dropout{};
  moe::Matrix y(x.rows(), d_model);
#include "readme/backend_stages.inc"
  using Layer = moe::MoELayer<moe::Router<moe::TopK<2>>, Expert, moe::Dropless, moe::NoLoss, B>;
  CHECK(y == Layer(config, weights).forward(x).y);
}

TEST_CASE("README isa: a layer on a chosen ISA's kernels") {
  wrapped.insert("isa");
  const moe::LayerConfig config = small;
  const moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::BF16, 7);
  const moe::LayerWeights weights = store.view();
  const moe::Matrix x = moe::random_normal_matrix(16, config.d_model, 8);
  if (moe::isa::cpu_level() < moe::isa::Level::avx2 || moe::isa::compiled_level < moe::isa::Level::avx2) {
    moe::test::require_error(
        [&] {
#include "readme/isa.inc"
        },
        moe::ErrorCode::unsupported, {"avx2"});
    return;
  }
#include "readme/isa.inc"
}

TEST_CASE("README train: the loop runs and lowers the loss") {
  wrapped.insert("train");
  const moe::LayerConfig config = small;
  const std::uint64_t seed = 11, steps = 20;
  const moe::Matrix x = moe::random_normal_matrix(32, config.d_model, 12);
  const moe::Matrix target = moe::random_normal_matrix(32, config.d_model, 13);
  float first = -1, last = -1;
  // Mean squared error to a fixed target; records the loss it sees.
  const auto dloss_dy = [&](const moe::Matrix& y) {
    const moe::Matrix diff = y - target;
    last = diff.squaredNorm() / float(diff.size());
    if (first < 0) first = last;
    return moe::Matrix(2.0f * diff / float(diff.size()));
  };
#include "readme/train.inc"
  CHECK(last < first);
}

TEST_CASE("every README C++ block is wrapped by a test case above") {
  const std::vector<std::string> in_readme{
#include "readme/names.inc"
  };
  for (const std::string& name : in_readme)
    CHECK_MESSAGE(wrapped.count(name) == 1, "README.md's C++ block '", name,
                  "' is not compiled by tests/readme/snippets.cpp: include readme/", name, ".inc in a test case");
  CHECK(in_readme.size() == wrapped.size());
}
