// mergekit-moe's YAML config: read as mergekit reads it (keys, defaults,
// aliases, ignored keys) and refused where mergekit refuses it, with its
// messages, plus the errors mergekit only hits later.
#include "test_support.hpp"

#include <moe/merge/yaml_config.hpp>

using namespace moe;
using moe::test::require_error;
namespace mg = moe::merge;

namespace {
mg::MergeConfig parse(const std::string& text) { return mg::parse_yaml_config(text, "cfg.yml").config; }

// The seed article's config (Beyonder-4x7B-v3): no gate_mode, dtype or experts_per_token.
const char* beyonder = R"(base_model: mlabonne/AlphaMonarch-7B
experts:
  - source_model: mlabonne/AlphaMonarch-7B
    positive_prompts:
    - "chat"
    - "assistant"
    - "tell me"
    - "explain"
    - "I want"
  - source_model: beowolx/CodeNinja-1.0-OpenChat-7B
    positive_prompts:
    - "code"
    - "python"
    - "javascript"
    - "programming"
    - "algorithm"
  - source_model: SanjiWatsuki/Kunoichi-DPO-v2-7B
    positive_prompts:
    - "storywriting"
    - "write"
    - "scene"
    - "story"
    - "character"
  - source_model: mlabonne/NeuralDaredevil-7B
    positive_prompts:
    - "reason"
    - "math"
    - "mathematics"
    - "solve"
    - "count"
)";
}  // namespace

TEST_CASE("a mergekit-moe config reads unchanged, with mergekit's defaults") {
  const mg::YamlConfig y = mg::parse_yaml_config(beyonder, "beyonder.yml");
  const mg::MergeConfig& c = y.config;
  CHECK(c.base_model == "mlabonne/AlphaMonarch-7B");
  REQUIRE(c.experts.size() == 4);
  CHECK(c.experts[1].source_model == "beowolx/CodeNinja-1.0-OpenChat-7B");
  CHECK(c.experts[2].positive_prompts ==
        std::vector<std::string>{"storywriting", "write", "scene", "story", "character"});
  CHECK(c.experts[3].negative_prompts.empty());
  CHECK(!c.experts[0].noise_scale);
  CHECK(c.gate_mode == mg::GateMode::hidden);
  CHECK(!c.dtype);
  CHECK(c.experts_per_token == 2);
  CHECK(c.text == beyonder);
  CHECK(y.ignored.empty());
  mg::validate(c);  // mergekit accepts it

  const mg::YamlConfig all = mg::parse_yaml_config(R"(base_model: base
gate_mode: hidden_last        # mergekit's alias of hidden
dtype: torch.bfloat16
experts_per_token: 1
architecture: MIXTRAL
shared_experts: null
merge_method: linear          # not a mergekit-moe key: ignored, listed
experts:
  - source_model: a
    positive_prompts: ["x"]
    negative_prompts: ["y", "z"]
    noise_scale: 0.01
    residual_scale: 0.5
    promtps: ["typo"]
  - source_model: b
    positive_prompts: ["w"]
)",
                                                   "all.yml");
  CHECK(all.config.gate_mode == mg::GateMode::hidden);
  CHECK(all.config.dtype == DType::BF16);
  CHECK(all.config.experts_per_token == 1);
  CHECK(all.config.experts[0].negative_prompts == std::vector<std::string>{"y", "z"});
  CHECK(all.config.experts[0].noise_scale == 0.01);
  CHECK(all.config.experts[0].residual_scale == 0.5);
  CHECK(all.ignored == std::vector<std::string>{"merge_method", "experts[0].promtps"});
  for (const auto& [text, mode] :
       std::vector<std::pair<std::string, mg::GateMode>>{{"hidden_avg", mg::GateMode::hidden_avg},
                                                         {"cheap_embed", mg::GateMode::cheap_embed},
                                                         {"random", mg::GateMode::random},
                                                         {"uniform_random", mg::GateMode::uniform_random}}) {
    CAPTURE(text);
    CHECK(parse("base_model: b\ngate_mode: " + text + "\nexperts: []\n").gate_mode == mode);
  }
}

TEST_CASE("mergekit's validations, in its order and with its messages") {
  const auto refuse = [](const std::string& text, const std::string& message, mg::ValidateOptions o = {}) {
    CAPTURE(text);
    require_error([&] { mg::validate(parse(text), o); }, ErrorCode::invalid_argument, {message});
  };
  refuse("base_model: b\nexperts_per_token: 0\nexperts: [{source_model: a, positive_prompts: [x]}]\n",
         "Experts per token must be >= 1");
  refuse(
      "base_model: b\nexperts_per_token: 5\nexperts: [{source_model: a, positive_prompts: [x]}, "
      "{source_model: c, positive_prompts: [y]}]\n",
      "Must include at least as many experts as experts_per_token.");
  refuse(
      "base_model: b\ngate_mode: cheap_embed\nexperts: [{source_model: a, positive_prompts: [x]}, {source_model: c}]\n",
      "Expert 1 has no positive prompts.");
  refuse(
      "base_model: b\nexperts: [{source_model: a, positive_prompts: []}, {source_model: c, positive_prompts: [y]}]\n",
      "Expert 0 has no positive prompts.");
  // uniform_random still wants prompts (a mergekit quirk kept for compatibility); random does not.
  refuse("base_model: b\ngate_mode: uniform_random\nexperts: [{source_model: a}, {source_model: c}]\n",
         "Expert 0 has no positive prompts.");
  mg::validate(parse("base_model: b\ngate_mode: random\nexperts: [{source_model: a}, {source_model: a}]\n"));
  refuse(
      "base_model: b\nexperts: [{source_model: a, positive_prompts: [x], negative_prompts: [n]}, "
      "{source_model: c, positive_prompts: [x], negative_prompts: [n]}]\n",
      "Your positive and negative prompts are identical for all experts.");
  // Same positives, different negatives: distinct enough for mergekit.
  mg::validate(
      parse("base_model: b\nexperts: [{source_model: a, positive_prompts: [x], negative_prompts: [n]}, "
            "{source_model: c, positive_prompts: [x]}]\n"));
  const std::string same_models =
      "base_model: b\nexperts: [{source_model: a, positive_prompts: [x]}, {source_model: a, positive_prompts: [y]}]\n";
  refuse(same_models, "All of your expert models are the same.");
  refuse(same_models, "--i-understand-this-is-not-useful-without-training flag.");
  mg::validate(parse(same_models), {.allow_identical_models = true});
}

TEST_CASE("what mergekit only trips over later is an error naming the file and the key") {
  const auto bad = [](const std::string& text, ErrorCode code, const std::string& message) {
    CAPTURE(text);
    require_error([&] { (void)parse(text); }, code, {"cfg.yml", message});
  };
  bad("experts: []\n", ErrorCode::bad_file, "\"base_model\" is missing");
  bad("base_model: b\n", ErrorCode::bad_file, "\"experts\" is missing");
  bad("base_model: b\nexperts: {a: 1}\n", ErrorCode::bad_file, "\"experts\" must be a list");
  bad("base_model: b\nexperts: [{positive_prompts: [x]}]\n", ErrorCode::bad_file,
      "\"experts[0].source_model\" is missing");
  bad("base_model: b\nexperts: [{source_model: a, positive_prompts: chat}]\n", ErrorCode::bad_file,
      "\"experts[0].positive_prompts\" must be a list of strings");
  bad("base_model: b\nexperts: [{source_model: a, positive_prompts: [[x]]}]\n", ErrorCode::bad_file,
      "\"experts[0].positive_prompts[0]\" must be a string");
  bad("base_model: b\nexperts: [{source_model: a, noise_scale: loud}]\n", ErrorCode::bad_file,
      "\"experts[0].noise_scale\" must be a number, found 'loud'");
  bad("base_model: b\nexperts_per_token: two\nexperts: []\n", ErrorCode::bad_file,
      "\"experts_per_token\" must be an integer, found 'two'");
  bad("base_model: b\ngate_mode: hiden\nexperts: []\n", ErrorCode::invalid_argument,
      "gate_mode 'hiden' is not one of hidden, hidden_avg, cheap_embed, random, uniform_random");
  bad("base_model: b\ndtype: int8\nexperts: []\n", ErrorCode::unsupported, "dtype 'int8' is not supported");
  bad("base_model: b\narchitecture: qwen\nexperts: []\n", ErrorCode::unsupported, "architecture 'qwen'");
  bad("base_model: b\nshared_experts: [{source_model: s}]\nexperts: []\n", ErrorCode::unsupported,
      "shared_experts are for DeepSeek and Qwen MoE outputs");
  // Found by the fuzzer: a list or map as a key escaped as YAML::BadConversion.
  bad("base_model: b\n[a, b]: 1\nexperts: []\n", ErrorCode::bad_file, "keys must be names, found a list as a key");
  bad("base_model: b\nexperts:\n  - source_model: a\n    ? {x: 1}\n    : 2\n", ErrorCode::bad_file,
      "keys in \"experts[0]\" must be names, found a map as a key");
  bad("base_model: b\n? \n: 1\nexperts: []\n", ErrorCode::bad_file, "keys must be names");
  bad("base_model: [b\n", ErrorCode::bad_file, "not valid YAML");
  bad("- just\n- a list\n", ErrorCode::bad_file, "expected a map of mergekit-moe keys");
  bad(std::string(100000, '[') + std::string(100000, ']'), ErrorCode::bad_file, "not valid YAML");
  require_error([] { (void)mg::read_yaml_config("/nonexistent/cfg.yml"); }, ErrorCode::bad_file,
                {"/nonexistent/cfg.yml", "cannot open"});
}
