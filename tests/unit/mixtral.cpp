// The Mixtral decoder: loading (every error names file, tensor, expected and
// found), the KV cache (chunked and token-by-token decoding equal one
// prefill, the rolling window), sampling, backends and threads.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/models/mixtral.hpp>
#include <moe/models/mixtral/routing_svg.hpp>

#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace moe;
using moe::test::max_abs_diff;
namespace mx = moe::mixtral;
namespace fs = std::filesystem;

namespace {
/// f must throw a moe::Error whose message contains `fragment`.
template <class F>
void require_error(F&& f, const std::string& fragment) {
  try {
    f();
    FAIL("expected a moe::Error containing '", fragment, "'");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK_MESSAGE(message.find(fragment) != std::string::npos, "message '", message, "' lacks '", fragment, "'");
  }
}

const fs::path models = fs::path(MOE_TEST_DATA_DIR) / "golden" / "models";

using moe::test::TempDir;

/// Copies a golden checkpoint folder (weights and config) to `dst`.
void copy_model(const std::string& name, const fs::path& dst) {
  for (const auto& e : fs::directory_iterator(models / name))
    if (e.path().filename() != "expected.safetensors")
      fs::copy_file(e.path(), dst / e.path().filename(), fs::copy_options::overwrite_existing);
  fs::permissions(dst, fs::perms::owner_all, fs::perm_options::add);
  for (const auto& e : fs::directory_iterator(dst))
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
}

nlohmann::json read_config(const fs::path& dir) { return io::read_json(dir / "config.json"); }
void write_config(const fs::path& dir, const nlohmann::json& j) { std::ofstream(dir / "config.json") << j.dump(2); }

/// Rewrites dir/file through `edit`, which may drop, rename or reshape tensors.
template <class Edit>
void rewrite(const fs::path& file, Edit&& edit) {
  io::SafeTensorsWriter w;
  {
    const io::SafeTensors f(file);
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    for (const io::TensorView& t : f.tensors()) {
      std::string name = t.name;
      DType dtype = t.dtype;
      std::vector<index_t> shape = t.shape;
      std::vector<unsigned char> bytes(t.data, t.data + t.nbytes);
      if (edit(name, dtype, shape, bytes)) w.add(name, dtype, shape, std::move(bytes));
    }
  }
  w.write(file);
}

template <class B = backend::Reference>
Matrix prefill_logits(const mx::Model<B>& model, const std::vector<std::int32_t>& ids) {
  mx::KvCache cache = model.new_cache();
  return model.forward(ids, cache).logits;
}

std::vector<std::int32_t> some_ids(index_t n, index_t vocab) {
  std::vector<std::int32_t> ids;
  for (index_t i = 0; i < n; ++i) ids.push_back(std::int32_t((i * 37 + 11) % vocab));
  return ids;
}
}  // namespace

TEST_CASE("config.json: every bad value is named with its file and key") {
  TempDir dir("config");
  copy_model("mixtral_tiny_f32", dir.path);
  const nlohmann::json good = read_config(dir.path);
  const auto expect = [&](auto&& mutate, const std::string& message) {
    nlohmann::json j = good;
    mutate(j);
    write_config(dir.path, j);
    CAPTURE(message);
    require_error([&] { (void)mx::load_config(dir.path); }, message);
  };
  expect([](auto& j) { j.erase("hidden_size"); }, "missing key \"hidden_size\"");
  expect([](auto& j) { j["num_hidden_layers"] = "two"; },
         "\"num_hidden_layers\" must be a positive integer, found \"two\"");
  expect([](auto& j) { j["vocab_size"] = -3; }, "\"vocab_size\" must be a positive integer");
  expect([](auto& j) { j["model_type"] = "gpt2"; },
         "model_type is \"gpt2\", expected \"mixtral\", \"mistral\" or \"llama\"");
  expect([](auto& j) { j["hidden_act"] = "gelu"; }, "only \"silu\"");
  expect([](auto& j) { j["num_key_value_heads"] = 3; }, "not a multiple of num_key_value_heads 3");
  expect([](auto& j) { j["num_experts_per_tok"] = 9; }, "num_experts_per_tok 9 exceeds num_local_experts 4");
  expect([](auto& j) { j["torch_dtype"] = "int8"; }, "torch_dtype \"int8\" is not supported");
  expect([](auto& j) { j["rope_scaling"] = {{"type", "linear"}}; }, "rope_scaling");
  expect([](auto& j) { j["head_dim"] = 15; }, "head_dim 15 must be even");
  expect([](auto& j) { j["rope_theta"] = 0; }, "\"rope_theta\" must be a positive number");
  expect(
      [](auto& j) {
        j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4}};
      },
      "rope_parameters.rope_type is \"yarn\"");
  {  // absent: transformers' MixtralConfig defaults (every other test config states them)
    nlohmann::json j = good;
    j.erase("rope_theta");
    j.erase("rms_norm_eps");
    j.erase("max_position_embeddings");
    j.erase("num_experts_per_tok");
    write_config(dir.path, j);
    const mx::Config c = mx::load_config(dir.path);
    CHECK(c.rope_theta == 1e6);
    CHECK(c.rms_norm_eps == 1e-5);
    CHECK(c.max_positions == 131072);
    CHECK(c.experts_per_token == 2);
  }
  {  // transformers >= 5 keeps rope_theta inside rope_parameters
    nlohmann::json j = good;
    j.erase("rope_theta");
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 12345.0}};
    write_config(dir.path, j);
    CHECK(mx::load_config(dir.path).rope_theta == 12345.0);
  }
  // Sizes whose products overflow, and token ids out of range (each once accepted).
  expect([](auto& j) { j["head_dim"] = std::int64_t(1) << 62; }, "num_attention_heads * head_dim");
  expect([](auto& j) { j["vocab_size"] = std::int64_t(1) << 56; }, "vocab_size 72057594037927936 exceeds 2^31 - 1");
  expect([](auto& j) { j["intermediate_size"] = std::int64_t(1) << 60; }, "num_local_experts * intermediate_size");
  expect([](auto& j) { j["bos_token_id"] = std::int64_t(1) << 40; },
         "\"bos_token_id\" must be a token id in [0, vocab_size");
  expect([](auto& j) { j["eos_token_id"] = -5; }, "\"eos_token_id\" must be a token id in [0, vocab_size");
  expect([](auto& j) { j["eos_token_id"] = {"2"}; }, "\"eos_token_id\" must be a token id");
  {  // a list of ids: the first; null: none
    nlohmann::json j = good;
    j["eos_token_id"] = {2, 7};
    j["bos_token_id"] = nullptr;
    write_config(dir.path, j);
    const mx::Config c = mx::load_config(dir.path);
    CHECK(c.eos_token_id == 2);
    CHECK(!c.bos_token_id);
  }
  {  // nesting: refused at the parser's limit, whatever the depth (80,000 once overflowed the stack)
    for (const int depth : {65, 80000}) {
      CAPTURE(depth);
      std::ofstream(dir.path / "config.json")
          << "{\"model_type\": " << std::string(std::size_t(depth), '[') << std::string(std::size_t(depth), ']') << "}";
      require_error([&] { (void)mx::load_config(dir.path); }, "JSON nested deeper than 64 levels");
    }
  }
  {  // a directory or a FIFO where config.json belongs: an error naming it, at once
    fs::remove(dir.path / "config.json");
    fs::create_directory(dir.path / "config.json");
    require_error([&] { (void)mx::load_config(dir.path); }, "config.json: not a regular file (a directory)");
    fs::remove(dir.path / "config.json");
    REQUIRE(::mkfifo((dir.path / "config.json").c_str(), 0600) == 0);
    require_error([&] { (void)mx::load_config(dir.path); }, "config.json: not a regular file (a FIFO)");
    fs::remove(dir.path / "config.json");
  }
  std::ofstream(dir.path / "config.json") << "{\"vocab_size\": 257,";
  require_error([&] { (void)mx::load_config(dir.path); }, "config.json: not valid JSON");
  fs::remove(dir.path / "config.json");
  require_error([&] { (void)mx::load_config(dir.path); }, "has no config.json");
  require_error([&] { (void)mx::Model<backend::Reference>(dir.path / "nowhere"); }, "does not exist");
}

/// mixtral_tiny_f32 as a dense model of `family`: expert `e`'s weights
/// become each layer's FFN (mlp.gate_proj = w1, up_proj = w3, down_proj =
/// w2); the router and the other experts are dropped.
void make_dense(const fs::path& dir, const std::string& family, index_t e) {
  copy_model("mixtral_tiny_f32", dir);
  nlohmann::json j = read_config(dir);
  j["model_type"] = family;
  j["architectures"] = {family == "llama" ? "LlamaForCausalLM" : "MistralForCausalLM"};
  j["sliding_window"] = nullptr;
  for (const char* key : {"num_local_experts", "num_experts_per_tok", "router_aux_loss_coef"}) j.erase(key);
  write_config(dir, j);
  const std::string expert = detail::cat("block_sparse_moe.experts.", e, ".");
  rewrite(dir / "model.safetensors", [&](std::string& name, DType&, std::vector<index_t>&, auto&) {
    if (name.find("block_sparse_moe.gate") != std::string::npos) return false;
    const auto at = name.find(expert);
    if (at == std::string::npos) return name.find("block_sparse_moe") == std::string::npos;
    const std::string w = name.substr(at + expert.size(), 2);
    name = name.substr(0, at) + "mlp." + (w == "w1" ? "gate_proj" : w == "w3" ? "up_proj" : "down_proj") + ".weight";
    return true;
  });
}

TEST_CASE("dense Mistral and Llama checkpoints: transformers' defaults, and the FFN runs as one expert") {
  for (const std::string family : {"mistral", "llama"}) {
    CAPTURE(family);
    TempDir dir("dense-" + family);
    make_dense(dir.path, family, 2);
    const nlohmann::json stated = read_config(dir.path);
    {  // defaults when absent: MistralConfig / LlamaConfig, not MixtralConfig
      nlohmann::json j = stated;
      for (const char* key : {"rope_theta", "rms_norm_eps", "max_position_embeddings", "sliding_window"}) j.erase(key);
      write_config(dir.path, j);
      const mx::Config c = mx::load_config(dir.path);
      CHECK(c.dense());
      CHECK(c.num_experts == 1);
      CHECK(c.rope_theta == 10000.0);
      CHECK(c.rms_norm_eps == 1e-6);
      CHECK(c.max_positions == (family == "llama" ? 2048 : 131072));
      CHECK(c.sliding_window == (family == "llama" ? std::optional<index_t>() : std::optional<index_t>(4096)));
      j["sliding_window"] = 8;  // LlamaConfig has no window: the key is ignored there
      write_config(dir.path, j);
      CHECK(mx::load_config(dir.path).sliding_window == (family == "llama" ? std::nullopt : std::optional<index_t>(8)));
      CHECK(mx::to_json(mx::load_config(dir.path))["model_type"] == family);
    }
    write_config(dir.path, stated);

    // The same weights as a one-expert Mixtral: the same logits, bit for bit
    // (softmax over one logit is exactly 1), and no routing reported.
    TempDir one("one-expert-" + family);
    copy_model("mixtral_tiny_f32", one.path);
    nlohmann::json j = read_config(one.path);
    j["num_local_experts"] = 1;
    j["num_experts_per_tok"] = 1;
    write_config(one.path, j);
    rewrite(one.path / "model.safetensors", [&](std::string& name, DType&, std::vector<index_t>& shape, auto& bytes) {
      if (name.find("block_sparse_moe.gate") != std::string::npos) {
        shape[0] = 1;
        bytes.resize(bytes.size() / 4);
        return true;
      }
      const auto at = name.find("experts.");
      if (at == std::string::npos) return true;
      if (name.compare(at, 10, "experts.2.") != 0) return false;
      name.replace(at, 10, "experts.0.");
      return true;
    });
    const auto ids = some_ids(11, 257);
    const mx::Model<backend::Reference> dense(dir.path), sparse(one.path);
    mx::KvCache a = dense.new_cache(), b = sparse.new_cache();
    const mx::StepOutput d = dense.forward(ids, a), s = sparse.forward(ids, b);
    CHECK(d.logits == s.logits);
    CHECK(d.routing.empty());
    {  // a copy of the weights outlives the model it came from: its router view stays valid
      std::optional<mx::Model<backend::Reference>> temporary(std::in_place, dir.path);
      const mx::Weights copy = temporary->weights();
      temporary.reset();
      CHECK(copy.layers[1].moe.router.gate.at(0, 5) == 0.0f);
    }
    CHECK(s.routing.size() == 2);
    const mx::Model<backend::Cpu<>> dense_cpu(dir.path, backend::Cpu<>(2));
    CHECK(max_abs_diff(prefill_logits(dense_cpu, ids), d.logits) <=
          1e-5f * std::max(1.0f, d.logits.cwiseAbs().maxCoeff()));
    // A different expert's FFN gives other logits: the names map to the right weights.
    TempDir other("dense-other-" + family);
    make_dense(other.path, family, 1);
    CHECK(max_abs_diff(prefill_logits(mx::Model<backend::Reference>(other.path), ids), d.logits) > 1e-3f);
    const mx::GenerateResult g =
        mx::generate(dense, ids, {.max_new_tokens = 4, .sampling = {}, .stop_tokens = {}, .stop_at_eos = false});
    CHECK(g.tokens.size() == 4);
  }
  TempDir dir("dense-bias");
  make_dense(dir.path, "llama", 0);
  nlohmann::json j = read_config(dir.path);
  j["attention_bias"] = true;
  write_config(dir.path, j);
  require_error([&] { (void)mx::load_config(dir.path); }, "attention_bias is true, only false (no biases)");
  j["attention_bias"] = false;
  j["mlp_bias"] = true;
  write_config(dir.path, j);
  require_error([&] { (void)mx::load_config(dir.path); }, "mlp_bias is true");
  // A dense checkpoint under a Mixtral config: the FFN is not where Mixtral keeps it.
  j.erase("mlp_bias");
  j["model_type"] = "mixtral";
  j["num_local_experts"] = 4;
  write_config(dir.path, j);
  require_error([&] { (void)mx::Model<backend::Reference>(dir.path); }, "block_sparse_moe.gate.weight' is missing");
}

TEST_CASE("checkpoint tensors are checked against the config before any compute") {
  TempDir dir("tensors");
  const fs::path file = dir.path / "model.safetensors";
  const auto fresh = [&] { copy_model("mixtral_tiny_f32", dir.path); };
  const auto load = [&] { (void)mx::Model<backend::Reference>(dir.path); };

  fresh();
  rewrite(file, [](std::string& n, DType&, auto&, auto&) { return n != "model.layers.1.self_attn.k_proj.weight"; });
  require_error(load, "tensor 'model.layers.1.self_attn.k_proj.weight' is missing (expected shape [32, 64])");

  fresh();
  rewrite(file, [](std::string& n, DType&, std::vector<index_t>& shape, auto&) {
    if (n == "model.layers.0.block_sparse_moe.experts.3.w2.weight") shape = {128, 64};  // transposed
    return true;
  });
  require_error(load,
                "model.safetensors: tensor 'model.layers.0.block_sparse_moe.experts.3.w2.weight' has shape "
                "[128, 64], expected [64, 128]");

  fresh();
  rewrite(file, [](std::string& n, DType& d, std::vector<index_t>& shape, std::vector<unsigned char>& bytes) {
    if (n == "model.norm.weight") {  // store it as F16: a valid weight dtype, but not torch_dtype
      d = DType::F16;
      bytes.resize(std::size_t(shape[0]) * 2);
    }
    return true;
  });
  require_error(load, "tensor 'model.norm.weight' has dtype F16 but config.json says torch_dtype F32");

  fresh();
  rewrite(file, [](std::string& n, DType& d, std::vector<index_t>& shape, std::vector<unsigned char>& bytes) {
    if (n == "model.norm.weight") {
      d = DType::I32;
      bytes.resize(std::size_t(shape[0]) * 4);
    }
    return true;
  });
  require_error(load, "tensor 'model.norm.weight' has dtype I32, expected F32, BF16 or F16");

  fresh();
  rewrite(file, [](std::string& n, auto&, auto&, auto&) {
    if (n == "model.norm.weight") n = "model.layers.2.input_layernorm.weight";  // a third layer the config lacks
    return true;
  });
  require_error(load, "tensor 'model.norm.weight' is missing");

  fresh();
  {
    nlohmann::json j = read_config(dir.path);
    j["num_hidden_layers"] = 1;  // the checkpoint has two: layer 1 is left over
    write_config(dir.path, j);
  }
  require_error(load,
                "tensor(s) that a Mixtral with this config.json does not have: "
                "'model.layers.1.block_sparse_moe.experts.0.w1.weight'");

  fresh();
  {
    std::vector<char> bytes(fs::file_size(file));
    std::ifstream(file, std::ios::binary).read(bytes.data(), std::streamsize(bytes.size()));
    std::ofstream(file, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size() - 100));
  }
  require_error(load, "truncated file?");

  fresh();
  fs::remove(file);
  require_error(load, "holds neither model.safetensors nor model.safetensors.index.json");
}

TEST_CASE("sharded checkpoints: index and shards must agree") {
  TempDir dir("shards");
  const auto fresh = [&] { copy_model("mixtral_tiny_bf16_sharded", dir.path); };
  const auto load = [&] { (void)mx::Model<backend::Reference>(dir.path); };
  const fs::path index = dir.path / "model.safetensors.index.json";
  const fs::path shard2 = dir.path / "model-00002-of-00002.safetensors";

  fresh();
  {
    const mx::Model<backend::Reference> sharded(dir.path);
    CHECK(sharded.checkpoint().file_count() == 2);
  }

  fresh();
  fs::remove(shard2);
  require_error(load, "model-00002-of-00002.safetensors: cannot open");

  fresh();
  std::string moved;
  rewrite(shard2, [&](std::string& n, auto&, auto&, auto&) {
    if (moved.empty()) moved = n;  // drop the shard's first tensor: the index still places it there
    return n != moved;
  });
  require_error(load, "says tensor '" + moved + "' is in model-00002-of-00002.safetensors, which does not hold it");

  fresh();
  nlohmann::json j = io::read_json(index);
  j["weight_map"].erase("model.norm.weight");  // still in shard 2
  std::ofstream(index) << j.dump();
  require_error(load, "holds tensor 'model.norm.weight', which model.safetensors.index.json does not list");

  fresh();
  j = io::read_json(index);
  j["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  std::ofstream(index) << j.dump();
  require_error(load, "expected a file in the same folder");

  fresh();
  std::ofstream(index) << "{\"metadata\": {}}";
  require_error(load, "expected an object with a \"weight_map\" object");
}

TEST_CASE("sharded and single-file checkpoints give the same logits (the project's own writer)") {
  TempDir one("single"), three("three-shards");
  mx::Config c = mx::tiny_config(97);
  c.dtype = DType::F32;
  c.num_layers = 2;
  mx::write_random_checkpoint(one.path, c, 7, 1);
  mx::write_random_checkpoint(three.path, c, 7, 3);
  CHECK(fs::exists(three.path / "model-00003-of-00003.safetensors"));
  const mx::Model<backend::Reference> a(one.path), b(three.path);
  CHECK(b.checkpoint().file_count() == 3);
  CHECK(mx::load_config(one.path).hidden_size == c.hidden_size);
  const auto ids = some_ids(9, c.vocab_size);
  CHECK(prefill_logits(a, ids) == prefill_logits(b, ids));
}

TEST_CASE("a checkpoint truncated or rewritten after it was opened is an error, not a fault or wrong numbers") {
  // The weights are views of the mapped files: truncation would fault
  // (SIGBUS) on the cut pages, bytes written in place would show through.
  const auto ids = some_ids(5, 257);
  for (const bool truncate : {true, false}) {
    CAPTURE(truncate);
    const TempDir dir(truncate ? "truncated" : "rewritten");
    copy_model("mixtral_tiny_f32", dir.path);
    const fs::path file = dir.path / "model.safetensors";
    // An old modification time, so that the write below moves it even on a
    // file system with a coarse clock.
    fs::last_write_time(file, fs::last_write_time(file) - std::chrono::hours(1));
    mx::Model<backend::Cpu<>> model(dir.path, backend::Cpu<>(1));
    model.pack_experts();  // the experts become copies; attention still reads the map
    const Matrix before = prefill_logits(model, ids);
    if (truncate) {
      fs::resize_file(file, fs::file_size(file) / 2);
    } else {
      std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(-64, std::ios::end);
      const std::string zeros(64, '\0');
      f.write(zeros.data(), 64);
    }
    require_error([&] { (void)prefill_logits(model, ids); }, file.string() + ": changed on disk since it was opened");
    if (truncate) require_error([&] { (void)prefill_logits(model, ids); }, "bytes then");
    CHECK(before.allFinite());
  }
}

TEST_CASE("bad token ids and overlong prompts are rejected with their position") {
  const mx::Model<backend::Reference> model(models / "mixtral_tiny_f32");
  mx::KvCache cache = model.new_cache();
  const std::vector<std::int32_t> bad = {5, 257, 9};
  require_error([&] { (void)model.forward(bad, cache); },
                "token id 257 at position 1 is outside the vocabulary [0, 257)");
  const std::vector<std::int32_t> negative = {-1};
  require_error([&] { (void)model.forward(negative, cache); }, "token id -1 at position 0");
  require_error([&] { (void)model.forward({}, cache); }, "no tokens to run");
  const auto long_prompt = some_ids(model.config().max_positions + 1, model.config().vocab_size);
  require_error([&] { (void)model.forward(long_prompt, cache); }, "exceed the model's context of 512");
  CHECK(cache.next_position() == 0);  // nothing ran
}

TEST_CASE("KV cache: chunked and token-by-token decoding equal one prefill (full and sliding window)") {
  for (const char* name : {"mixtral_tiny_f32", "mixtral_tiny_sliding_f32", "mixtral_tiny_tied_f16"}) {
    CAPTURE(name);
    const mx::Model<backend::Reference> model(models / name);
    const auto ids = some_ids(23, model.config().vocab_size);  // > 3 windows of 6
    const Matrix all = prefill_logits(model, ids);
    for (const std::vector<std::size_t>& chunks :
         {std::vector<std::size_t>(23, 1), std::vector<std::size_t>{5, 1, 7, 10}, std::vector<std::size_t>{1, 22}}) {
      mx::KvCache cache = model.new_cache();
      std::size_t at = 0;
      for (const std::size_t n : chunks) {
        const Matrix part = model.forward(std::span(ids).subspan(at, n), cache).logits;
        CHECK(max_abs_diff(part, all.middleRows(index_t(at), index_t(n))) <= 1e-5f);
        at += n;
      }
      CHECK(cache.next_position() == 23);
    }
  }
}

TEST_CASE("the sliding-window cache holds exactly `window` entries") {
  mx::LayerKvCache cache(2, 3);
  for (index_t p = 0; p < 8; ++p) {
    const float k[2] = {float(p), 0.5f}, v[2] = {-float(p), 0.25f};
    cache.append(p, k, v);
  }
  REQUIRE(cache.size() == 3);
  for (index_t i = 0; i < 3; ++i) {  // oldest first, each entry with its own key and value
    CAPTURE(i);
    CHECK(cache.position(i) == 5 + i);
    CHECK(cache.key(i)[0] == float(5 + i));
    CHECK(cache.key(i)[1] == 0.5f);
    CHECK(cache.value(i)[0] == -float(5 + i));
    CHECK(cache.value(i)[1] == 0.25f);
  }
  const mx::AttentionShape s{4, 2, 8, 3};
  CHECK(s.visible(7, 5));
  CHECK_FALSE(s.visible(7, 4));
  CHECK_FALSE(s.visible(5, 6));
}

TEST_CASE("cpu and reference backends agree; threads do not change a bit") {
  const auto ids = some_ids(17, 257);
  const mx::Model<backend::Reference> ref(models / "mixtral_tiny_bf16");
  const mx::Model<backend::Cpu<>> one(models / "mixtral_tiny_bf16", backend::Cpu<>(1));
  const mx::Model<backend::Cpu<>> three(models / "mixtral_tiny_bf16", backend::Cpu<>(3));
  const Matrix a = prefill_logits(ref, ids), b = prefill_logits(one, ids), c = prefill_logits(three, ids);
  CHECK(max_abs_diff(a, b) <= 1e-5f * std::max(1.0f, a.cwiseAbs().maxCoeff()));
  CHECK(b == c);
}

TEST_CASE("sampling: greedy, seeds, top-k, top-p") {
  const std::vector<float> logits = {0.1f, 2.0f, 1.5f, -1.0f, 2.0f};
  CHECK(mx::argmax(logits) == 1);  // tie between 1 and 4: the lower id
  CHECK(mx::sample(logits, {}, 0) == 1);
  mx::SamplingOptions o{.temperature = 1.0f, .seed = 42};
  std::vector<int> counts(5, 0);
  for (std::uint64_t step = 0; step < 20000; ++step) ++counts[std::size_t(mx::sample(logits, o, step))];
  double total = 0;
  for (float l : logits) total += std::exp(double(l));
  for (std::size_t i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(std::abs(counts[i] / 20000.0 - std::exp(double(logits[i])) / total) < 0.015);
  }
  for (std::uint64_t step = 0; step < 50; ++step) {
    CHECK(mx::sample(logits, o, step) == mx::sample(logits, o, step));  // same seed and step, same token
    const int top2 = mx::sample(logits, {.temperature = 1.0f, .top_k = 2, .seed = step}, step);
    CHECK((top2 == 1 || top2 == 4));
    CHECK(mx::sample(logits, {.temperature = 1.0f, .top_p = 0.01f, .seed = step}, step) == 1);
  }
  // Nucleus sampling by frequency: p = (0.356, 0.356, 0.216, 0.053, 0.018) for
  // ids (1, 4, 2, 0, 3). top_p 0.5 keeps {1, 4} (mass 0.713), top_p 0.75
  // keeps {1, 4, 2} (0.929), each renormalised over what it keeps.
  for (const auto& [top_p, expected] : std::vector<std::pair<float, std::vector<double>>>{
           {0.5f, {0, 0.5, 0, 0, 0.5}}, {0.75f, {0, 0.3836, 0.2327, 0, 0.3836}}}) {
    CAPTURE(top_p);
    std::vector<int> seen(5, 0);
    for (std::uint64_t step = 0; step < 20000; ++step)
      ++seen[std::size_t(mx::sample(logits, {.temperature = 1.0f, .top_p = top_p, .seed = 7}, step))];
    for (std::size_t i = 0; i < 5; ++i) {
      CAPTURE(i);
      CHECK(std::abs(seen[i] / 20000.0 - expected[i]) < 0.015);
    }
  }
  std::vector<int> seeds_differ;
  for (std::uint64_t seed = 0; seed < 16; ++seed)
    seeds_differ.push_back(mx::sample(logits, {.temperature = 2.0f, .seed = seed}, 0));
  CHECK(std::set<int>(seeds_differ.begin(), seeds_differ.end()).size() > 1);
  require_error([&] { mx::SamplingOptions{.top_p = 0.0f}.validate(); }, "top_p must be in (0, 1]");
  require_error([&] { mx::SamplingOptions{.temperature = -1.0f}.validate(); }, "temperature must be >= 0");
}

TEST_CASE("generate: greedy continuation equals the golden one; stop tokens end it") {
  const fs::path dir = models / "mixtral_tiny_sliding_f32";
  const io::SafeTensors expected(dir / "expected.safetensors");
  const auto prompt = expected.tensor("input_ids").to_vector<std::int32_t>();
  const auto golden = expected.tensor("greedy_ids").to_vector<std::int32_t>();
  const mx::Model<backend::Cpu<>> model(dir);
  std::vector<std::int32_t> streamed;
  const mx::GenerateResult r =
      mx::generate(model, prompt, {.max_new_tokens = 16, .sampling = {}, .stop_tokens = {}, .stop_at_eos = false},
                   [&](std::int32_t id) { streamed.push_back(id); });
  CHECK(r.tokens == golden);
  CHECK(streamed == golden);
  CHECK(r.end == mx::GenerateResult::End::length);
  index_t routed = 0;
  for (index_t n : r.expert_tokens[0]) routed += n;
  CHECK(routed == 2 * (index_t(prompt.size()) + 15));  // top-2 over the prompt and 15 decode steps

  const mx::GenerateResult stopped = mx::generate(
      model, prompt, {.max_new_tokens = 16, .sampling = {}, .stop_tokens = {golden[3]}, .stop_at_eos = false});
  CHECK(stopped.end == mx::GenerateResult::End::stop_token);
  CHECK(stopped.tokens == std::vector<std::int32_t>(golden.begin(), golden.begin() + 4));

  // By default generation ends at the model's eos_token_id (config.json):
  // the same model, its EOS made the sixth greedy token.
  const TempDir eos("generate-eos");
  copy_model("mixtral_tiny_sliding_f32", eos.path);
  nlohmann::json config = io::read_json(eos.path / "config.json");
  config["eos_token_id"] = golden[5];
  std::ofstream(eos.path / "config.json") << config.dump();
  const mx::Model<backend::Cpu<>> with_eos(eos.path);
  mx::GenerateOptions options;  // the defaults, but for the length
  options.max_new_tokens = 16;
  const mx::GenerateResult at_eos = mx::generate(with_eos, prompt, options);
  const auto first_eos = std::find(golden.begin(), golden.end(), golden[5]) + 1;  // it may come earlier too
  CHECK(at_eos.end == mx::GenerateResult::End::stop_token);
  CHECK(at_eos.tokens == std::vector<std::int32_t>(golden.begin(), first_eos));
  options.stop_at_eos = false;
  CHECK(mx::generate(with_eos, prompt, options).tokens == golden);
}

TEST_CASE("router losses over all layers match the golden values") {
  const fs::path dir = models / "mixtral_tiny_bf16";
  const io::SafeTensors expected(dir / "expected.safetensors");
  const mx::Model<backend::Reference> model(dir);
  mx::KvCache cache = model.new_cache();
  const auto out = model.forward(expected.tensor("input_ids").to_vector<std::int32_t>(), cache);
  const mx::RouterLosses l = mx::router_losses(out.routing);
  CHECK(l.balance == doctest::Approx(expected.tensor("aux_loss").to_vector<float>()[0]).epsilon(1e-5));
  CHECK(l.z == doctest::Approx(expected.tensor("z_loss").to_vector<float>()[0]).epsilon(1e-5));
}

TEST_CASE("routing_svg: a cell per token and layer in its experts' colours, pairs per expert, labels escaped") {
  // Two layers, three tokens, four experts, top-2; token 2 of layer 1 has an empty second slot.
  std::vector<Routing> layers(2);
  const std::vector<std::vector<std::int32_t>> chosen = {{0, 1, 2, 1, 3, 0}, {1, 2, 1, 3, 0, no_expert}};
  for (std::size_t l = 0; l < 2; ++l) {
    layers[l].tokens = 3;
    layers[l].experts = 4;
    layers[l].k = 2;
    layers[l].expert = chosen[l];
    layers[l].weight.assign(6, 0.5f);
  }
  const std::vector<std::string> labels = {"<s>", "a&b", "it's"};
  const std::string svg = mx::routing_svg(layers, labels);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  for (std::size_t l = 0; l < 2; ++l)
    for (int t = 0; t < 3; ++t)
      for (int j = 0; j < 2; ++j) {
        const std::int32_t e = chosen[l][std::size_t(t * 2 + j)];
        const std::string cell = "data-layer='" + std::to_string(l) + "' data-token='" + std::to_string(t) +
                                 "' data-rank='" + std::to_string(j) + "' data-expert='" + std::to_string(e) + "'";
        CHECK_MESSAGE((svg.find(cell) != std::string::npos) == (e >= 0), cell);
      }
  // Pairs per expert: layer 0 took 0 twice, 1 twice, 2 once, 3 once; layer 1: 1 twice, 2, 3 and 0 once.
  for (const auto& [l, e, n] : {std::tuple{0, 0, 2}, {0, 1, 2}, {0, 2, 1}, {0, 3, 1}, {1, 0, 1}, {1, 1, 2}, {1, 3, 1}})
    CHECK_MESSAGE(svg.find("data-layer='" + std::to_string(l) + "' data-expert='" + std::to_string(e) +
                           "' data-count='" + std::to_string(n) + "'") != std::string::npos,
                  l, " ", e, " ", n);
  CHECK(svg.find("&lt;s&gt;") != std::string::npos);
  CHECK(svg.find("a&amp;b") != std::string::npos);
  CHECK(svg.find("it&apos;s") != std::string::npos);
  CHECK(svg.find(">a&b<") == std::string::npos);

  test::require_error([&] { (void)mx::routing_svg(layers, std::vector<std::string>{"x"}); }, ErrorCode::shape_mismatch,
                      {"1 token labels for 3 routed tokens"});
  test::require_error([&] { (void)mx::routing_svg(std::vector<Routing>{}, labels); }, ErrorCode::invalid_argument,
                      {"a dense model routes nothing"});
}
