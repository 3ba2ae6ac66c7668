// libFuzzer: a mergekit-moe YAML config. parse_yaml_config and validate
// either refuse it with a moe::Error or give a config whose fields hold.
#include "fuzz_support.hpp"

#include <moe/merge/yaml_config.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  moe::fuzz::expect_clean([&] {
    const moe::merge::YamlConfig y = moe::merge::parse_yaml_config(text, "fuzz.yml");
    moe::merge::validate(y.config);
    (void)moe::merge::name(y.config.gate_mode);
  });
  return 0;
}
