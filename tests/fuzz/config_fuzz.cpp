// libFuzzer: a config.json. load_config either refuses it with a moe::Error
// or gives sizes whose products the decoder can form without overflow.
#include "fuzz_support.hpp"

#include <moe/models/mixtral/config.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto dir = moe::fuzz::work_dir() / "config";
  std::filesystem::create_directories(dir);
  moe::fuzz::write_file(dir / "config.json", {reinterpret_cast<const char*>(data), size});
  moe::fuzz::expect_clean([&] {
    const moe::mixtral::Config c = moe::mixtral::load_config(dir);
    (void)c.q_width();
    (void)c.kv_width();
    (void)c.group_size();
    (void)moe::mixtral::to_json(c).dump();
  });
  return 0;
}
