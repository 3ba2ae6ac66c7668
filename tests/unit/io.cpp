// Writing checkpoints: tensors produced at write time (one in memory at a
// time), shards split at the size limit as transformers splits them, and
// the index; every file read back through the loaders.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/io/check_values.hpp>
#include <moe/io/checkpoint.hpp>
#include <moe/io/sharded_writer.hpp>

using namespace moe;
namespace fs = std::filesystem;

namespace {
using moe::test::TempDir;

/// A Fill writing n floats start, start + 1, ...; counts its calls.
io::SafeTensorsWriter::Fill counting(float start, std::size_t n, int& calls) {
  return [=, &calls](unsigned char* dst) {
    ++calls;
    for (std::size_t i = 0; i < n; ++i) {
      const float v = start + float(i);
      std::memcpy(dst + 4 * i, &v, 4);
    }
  };
}
}  // namespace

TEST_CASE("ShardedWriter: one file under the limit, produced tensors read back") {
  const TempDir dir("io");
  int calls = 0;
  io::ShardedWriter w(1 << 20);
  w.add("b.weight", DType::F32, {2, 3}, counting(10, 6, calls));
  w.add("a.weight", DType::F32, {4}, counting(-2, 4, calls));
  w.set_metadata("format", "pt");
  CHECK(calls == 0);  // nothing produced before write
  w.write(dir.path);
  CHECK(calls == 2);
  CHECK(w.shard_count() == 1);
  CHECK_FALSE(fs::exists(dir.path / "model.safetensors.index.json"));
  const io::SafeTensors f(dir.path / "model.safetensors");
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.tensor("b.weight").shape == std::vector<index_t>{2, 3});
  CHECK(f.tensor("b.weight").to_vector<float>() == std::vector<float>{10, 11, 12, 13, 14, 15});
  CHECK(f.tensor("a.weight").to_vector<float>() == std::vector<float>{-2, -1, 0, 1});
}

TEST_CASE("ShardedWriter: shards split at the limit, in order, with the index") {
  const TempDir dir("io");
  int calls = 0;
  io::ShardedWriter w(90);                                  // bytes
  w.add("t0", DType::F32, {10}, counting(0, 10, calls));    // 40: shard 1
  w.add("t1", DType::F32, {10}, counting(100, 10, calls));  // 80: shard 1
  w.add("t2", DType::F32, {10}, counting(200, 10, calls));  // 120 > 90: shard 2
  w.add("t3", DType::F32, {25}, counting(300, 25, calls));  // 100 alone, over the limit: shard 3
  w.add("t4", DType::F32, {2}, counting(400, 2, calls));    // after an over-limit tensor: shard 4
  CHECK(w.shard_count() == 4);
  CHECK(w.total_bytes() == 40 + 40 + 40 + 100 + 8);
  w.write(dir.path);
  CHECK(calls == 5);
  const nlohmann::json index = io::read_json(dir.path / "model.safetensors.index.json");
  CHECK(index["metadata"]["total_size"] == 228);
  CHECK(index["weight_map"]["t0"] == "model-00001-of-00004.safetensors");
  CHECK(index["weight_map"]["t1"] == "model-00001-of-00004.safetensors");
  CHECK(index["weight_map"]["t2"] == "model-00002-of-00004.safetensors");
  CHECK(index["weight_map"]["t3"] == "model-00003-of-00004.safetensors");
  CHECK(index["weight_map"]["t4"] == "model-00004-of-00004.safetensors");
  const io::Checkpoint ckpt(dir.path);  // the loader accepts what was written
  CHECK(ckpt.file_count() == 4);
  CHECK(ckpt.tensor("t3").to_vector<float>().back() == 324.0f);
  CHECK(ckpt.tensor("t4").to_vector<float>() == std::vector<float>{400, 401});
  moe::test::require_error([&] { w.add("t2", DType::F32, {1}, counting(0, 1, calls)); }, ErrorCode::invalid_argument,
                           {"tensor 't2' added twice"});
  moe::test::require_error([] { io::ShardedWriter bad(0); }, ErrorCode::invalid_argument, {"shard size must be > 0"});
}

TEST_CASE("check_values: every tensor scanned in name order; the first NaN or infinity named") {
  const TempDir dir("values");
  std::vector<Eigen::bfloat16> b(3 * 4, Eigen::bfloat16(0.5f));
  std::vector<float> c(5, 1.0f);
  const std::vector<std::int32_t> ids{1, 2, 3};
  {
    io::SafeTensorsWriter w;
    w.add("a.weight", {3, 4}, b);
    w.add("c.weight", {5}, c);
    w.add("ids", {3}, ids);  // integers have no NaN: not scanned
    w.write(dir.path / "model.safetensors");
  }
  CHECK(io::check_values(io::Checkpoint(dir.path)) == 17);

  b[1 * 4 + 2] = Eigen::bfloat16(NAN);
  c[4] = -INFINITY;
  {
    io::SafeTensorsWriter w;
    w.add("c.weight", {5}, c);
    w.add("a.weight", {3, 4}, b);
    w.write(dir.path / "model.safetensors");
  }
  test::require_error([&] { io::check_values(io::Checkpoint(dir.path)); }, ErrorCode::non_finite,
                      {"model.safetensors", "tensor 'a.weight' [3, 4] BF16: element [1, 2] is nan"});
  b[1 * 4 + 2] = Eigen::bfloat16(0.0f);
  {
    io::SafeTensorsWriter w;
    w.add("a.weight", {3, 4}, b);
    w.add("c.weight", {5}, c);
    w.write(dir.path / "model.safetensors");
  }
  test::require_error([&] { io::check_values(io::Checkpoint(dir.path)); }, ErrorCode::non_finite,
                      {"tensor 'c.weight' [5] F32: element [4] is -inf"});
}
