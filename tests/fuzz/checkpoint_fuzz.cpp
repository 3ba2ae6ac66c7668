// libFuzzer: a sharded checkpoint folder. The input is the index JSON, then
// after each "\n--shard--\n" the bytes of the next shard
// (model-00001-of-00002.safetensors, model-00002-of-00002.safetensors).
// Checkpoint either refuses the folder with a moe::Error or holds tensors
// that the index and the shards agree on.
#include "fuzz_support.hpp"

#include <moe/io/checkpoint.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto dir = moe::fuzz::work_dir() / "checkpoint";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto [index, shards] = moe::fuzz::split({reinterpret_cast<const char*>(data), size}, "\n--shard--\n");
  const auto [first, second] = moe::fuzz::split(shards, "\n--shard--\n");
  moe::fuzz::write_file(dir / "model.safetensors.index.json", index);
  moe::fuzz::write_file(dir / "model-00001-of-00002.safetensors", first);
  moe::fuzz::write_file(dir / "model-00002-of-00002.safetensors", second);
  moe::fuzz::expect_clean([&] {
    const moe::io::Checkpoint ckpt(dir);
    for (const std::string& name : ckpt.names()) (void)ckpt.tensor(name).numel();
    (void)ckpt.tensor_bytes();
  });
  return 0;
}
