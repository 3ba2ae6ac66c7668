// libFuzzer: a whole model folder: config.json, then after "\n--weights--\n"
// the bytes of model.safetensors. Loading either refuses it with a
// moe::Error or gives a model whose tensors match its config; a small one
// then runs a forward pass over two tokens.
#include "fuzz_support.hpp"

#include <moe/models/mixtral.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto dir = moe::fuzz::work_dir() / "model";
  std::filesystem::create_directories(dir);
  const auto [config, weights] = moe::fuzz::split({reinterpret_cast<const char*>(data), size}, "\n--weights--\n");
  moe::fuzz::write_file(dir / "config.json", config);
  moe::fuzz::write_file(dir / "model.safetensors", weights);
  moe::fuzz::expect_clean([&] {
    const moe::mixtral::Model<moe::backend::Reference> model(dir);
    const moe::mixtral::Config& c = model.config();
    if (c.vocab_size * c.hidden_size > (1 << 16) || c.num_layers > 4 || c.hidden_size > 256) return;
    moe::mixtral::KvCache cache = model.new_cache();
    (void)model.forward(std::vector<std::int32_t>{0, std::int32_t(c.vocab_size - 1)}, cache);
  });
  return 0;
}
