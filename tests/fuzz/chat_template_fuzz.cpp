// libFuzzer: a chat template (a model's tokenizer_config.json or GGUF
// carries one). Parsing and rendering it either gives text or refuses with
// a moe::Error: never a crash, a hang or unbounded memory (the renderer's
// Options bound nesting, steps and text sizes).
#include "fuzz_support.hpp"

#include <moe/text/jinja.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using moe::text::jinja::Value;
  static const Value messages = Value::from_json(nlohmann::json::parse(R"([
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "  Hello {{ x }} %} \u00fc\u2713 "},
    {"role": "assistant", "content": "Hi"},
    {"role": "user", "content": ""}])"));
  moe::fuzz::expect_clean([&] {
    const moe::text::jinja::Template t(std::string_view(reinterpret_cast<const char*>(data), size));
    (void)t.render({{"messages", messages},
                    {"bos_token", Value::of("<s>")},
                    {"eos_token", Value::of("</s>")},
                    {"add_generation_prompt", Value::of(true)}});
  });
  return 0;
}
