// moe::merge: a frankenMoE from tiny dense models. Every copied tensor is
// bit-identical to its source, the experts are where mergekit puts them,
// the result loads and generates as a Mixtral, and every mismatch between
// the models is refused before anything is written.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/merge/merge.hpp>
#include <moe/models/mixtral.hpp>

#include <cstring>
#include <sstream>

using namespace moe;
using moe::test::require_error;
using moe::test::TempDir;
namespace fs = std::filesystem;
namespace mg = moe::merge;
namespace mx = moe::mixtral;

namespace {
mx::Config dense(mx::Family family, DType dtype = DType::F32) {
  mx::Config c;
  c.family = family;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.num_experts = c.experts_per_token = 1;
  c.max_positions = 128;
  c.rope_theta = 10000;
  c.dtype = dtype;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

/// Three dense Mistral models (seeds 1, 2, 3) under `root`; model 1 is the base.
std::vector<std::string> three_models(const fs::path& root, mx::Config c = dense(mx::Family::mistral)) {
  std::vector<std::string> dirs;
  for (int seed = 1; seed <= 3; ++seed) {
    dirs.push_back((root / ("m" + std::to_string(seed))).string());
    mx::write_random_checkpoint(dirs.back(), c, std::uint64_t(seed));
  }
  return dirs;
}

mg::MergeConfig config_of(const std::vector<std::string>& dirs, mg::GateMode mode = mg::GateMode::random) {
  mg::MergeConfig c;
  c.base_model = dirs[0];
  for (const std::string& dir : dirs) {
    mg::ExpertSource e;
    e.source_model = dir;
    e.positive_prompts = {"prompt for " + dir};  // unused by random gates; mergekit wants them elsewhere
    c.experts.push_back(e);
  }
  c.gate_mode = mode;
  c.text = "base_model: " + dirs[0] + "\n";
  return c;
}

mg::MergeOptions seeded(std::uint64_t seed) {
  mg::MergeOptions o;
  o.seed = seed;
  return o;
}

bool same_bytes(const io::TensorView& a, const io::TensorView& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes) == 0;
}
}  // namespace

TEST_CASE("merge: every tensor where mergekit puts it, bit for bit; the result runs as a Mixtral") {
  const TempDir root("basic");
  const auto dirs = three_models(root.path);
  const fs::path out = root.path / "moe";
  const mg::MergeReport report = mg::merge(config_of(dirs), out, seeded(3));
  CHECK(report.layers == 2);
  CHECK(report.experts == 3);
  CHECK(report.shards == 1);

  const io::Checkpoint merged(out), base(dirs[0]);
  for (const std::string& n : base.names())
    if (n.find(".mlp.") == std::string::npos) CHECK_MESSAGE(same_bytes(merged.tensor(n), base.tensor(n)), n);
  for (index_t e = 0; e < 3; ++e) {
    const io::Checkpoint source(dirs[std::size_t(e)]);
    for (index_t l = 0; l < 2; ++l) {
      CHECK(same_bytes(merged.tensor(mx::names::expert(l, e, "w1")), source.tensor(mx::names::mlp(l, "gate_proj"))));
      CHECK(same_bytes(merged.tensor(mx::names::expert(l, e, "w2")), source.tensor(mx::names::mlp(l, "down_proj"))));
      CHECK(same_bytes(merged.tensor(mx::names::expert(l, e, "w3")), source.tensor(mx::names::mlp(l, "up_proj"))));
    }
  }
  // Random gates: N(0, 1), unscaled, seeded.
  double sum = 0, squares = 0;
  for (index_t l = 0; l < 2; ++l)
    for (float v : merged.tensor(mx::names::router(l)).to_vector<float>()) {
      sum += v;
      squares += double(v) * v;
    }
  const double n = 2 * 3 * 32, mean = sum / n, sd = std::sqrt(squares / n - mean * mean);
  CHECK(std::abs(mean) < 0.25);
  CHECK(sd > 0.8);
  CHECK(sd < 1.2);
  CHECK(report.gate_condition.size() == 2);

  const nlohmann::json config = io::read_json(out / "config.json");
  CHECK(config["model_type"] == "mixtral");
  CHECK(config["architectures"][0] == "MixtralForCausalLM");
  CHECK(config["num_local_experts"] == 3);
  CHECK(config["num_experts_per_tok"] == 2);
  CHECK(config["sliding_window"].is_null());
  CHECK(config["torch_dtype"] == "float32");
  CHECK(config["hidden_size"] == 32);
  std::ifstream yml(out / "mergekit_moe_config.yml");
  CHECK(std::string(std::istreambuf_iterator<char>(yml), {}) == "base_model: " + dirs[0] + "\n");

  const mx::Model<backend::Cpu<>> model(out, backend::Cpu<>(1));  // every tensor checked against config.json
  const mx::GenerateResult g =
      mx::generate(model, std::vector<std::int32_t>{1, 5, 9},
                   {.max_new_tokens = 5, .sampling = {}, .stop_tokens = {}, .stop_at_eos = false});
  CHECK(g.tokens.size() == 5);
  index_t routed = 0;
  for (index_t k : g.expert_tokens[0]) routed += k;
  CHECK(routed == 2 * (3 + 4));  // top-2 over the prompt and 4 decode steps

  // The same seed, the same bytes; another seed, other gates.
  const fs::path again = root.path / "again", other = root.path / "other";
  mg::merge(config_of(dirs), again, seeded(3));
  mg::merge(config_of(dirs), other, seeded(4));
  const io::Checkpoint same_seed(again), other_seed(other);
  CHECK(same_bytes(same_seed.tensor(mx::names::router(1)), merged.tensor(mx::names::router(1))));
  CHECK_FALSE(same_bytes(other_seed.tensor(mx::names::router(1)), merged.tensor(mx::names::router(1))));
}

TEST_CASE("merge: dtype, noise and residual scale, shards, uniform gates, router rows from a file") {
  const TempDir root("options");
  const auto dirs = three_models(root.path);
  {  // bfloat16 out: each value rounded to nearest even; residual_scale on down_proj only
    mg::MergeConfig c = config_of(dirs, mg::GateMode::uniform_random);
    c.dtype = DType::BF16;
    c.experts[1].residual_scale = 0.5;
    const fs::path out = root.path / "bf16";
    mg::MergeOptions small_shards;
    small_shards.max_shard_bytes = 20000;
    mg::merge(c, out, small_shards);
    const io::Checkpoint merged(out), source(dirs[1]);
    CHECK(merged.file_count() > 2);
    CHECK(fs::exists(out / "model.safetensors.index.json"));
    const auto w2 = merged.tensor(mx::names::expert(1, 1, "w2")).to_vector<Eigen::bfloat16>();
    const auto down = source.tensor(mx::names::mlp(1, "down_proj")).to_vector<float>();
    const auto w1 = merged.tensor(mx::names::expert(1, 1, "w1")).to_vector<Eigen::bfloat16>();
    const auto gate = source.tensor(mx::names::mlp(1, "gate_proj")).to_vector<float>();
    index_t wrong = 0;
    for (std::size_t i = 0; i < down.size(); ++i)
      wrong += Eigen::numext::bit_cast<std::uint16_t>(w2[i]) !=
               Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(down[i] * 0.5f));
    for (std::size_t i = 0; i < gate.size(); ++i)
      wrong += Eigen::numext::bit_cast<std::uint16_t>(w1[i]) !=
               Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(gate[i]));
    CHECK(wrong == 0);
    const float bound = 1.0f / std::sqrt(32.0f);
    for (Eigen::bfloat16 v : merged.tensor(mx::names::router(0)).to_vector<Eigen::bfloat16>())
      CHECK(std::abs(float(v)) <= bound * 1.01f);
    CHECK(io::read_json(out / "config.json")["torch_dtype"] == "bfloat16");
    (void)mx::Model<backend::Reference>(out);
  }
  {  // noise_scale: the weights move by about the scale, seeded
    mg::MergeConfig c = config_of(dirs);
    c.experts[2].noise_scale = 0.01;
    const fs::path out = root.path / "noise";
    mg::merge(c, out, seeded(1));
    const io::Checkpoint noised(out), source1(dirs[1]), source2(dirs[2]);
    const auto noisy = noised.tensor(mx::names::expert(0, 2, "w3")).to_vector<float>();
    const auto clean = source2.tensor(mx::names::mlp(0, "up_proj")).to_vector<float>();
    double squares = 0;
    for (std::size_t i = 0; i < clean.size(); ++i) squares += double(noisy[i] - clean[i]) * (noisy[i] - clean[i]);
    const double rms = std::sqrt(squares / double(clean.size()));
    CHECK(rms > 0.008);
    CHECK(rms < 0.012);
    CHECK(same_bytes(noised.tensor(mx::names::expert(0, 1, "w3")), source1.tensor(mx::names::mlp(0, "up_proj"))));
  }
  {  // router rows injected from a file: written exactly
    io::SafeTensorsWriter rows;
    std::vector<float> g0(3 * 32), g1(3 * 32);
    for (std::size_t i = 0; i < g0.size(); ++i) {
      g0[i] = float(i) / 64.0f;
      g1[i] = -float(i) / 128.0f;
    }
    rows.add(mx::names::router(0), {3, 32}, g0);
    rows.add(mx::names::router(1), {3, 32}, g1);
    rows.write(root.path / "gates.safetensors");
    const fs::path out = root.path / "injected";
    mg::MergeOptions injected;
    injected.router_weights = root.path / "gates.safetensors";
    const mg::MergeReport r = mg::merge(config_of(dirs, mg::GateMode::cheap_embed), out, injected);
    const io::Checkpoint injected_out(out);
    CHECK(injected_out.tensor(mx::names::router(1)).to_vector<float>() == g1);
    CHECK(r.degenerate_layers == std::vector<index_t>{0, 1});  // rank-deficient rows: condition number huge
    injected.router_weights = root.path / "nowhere.safetensors";
    require_error([&] { mg::merge(config_of(dirs), out, injected); }, ErrorCode::bad_file, {"nowhere.safetensors"});
  }
}

TEST_CASE("merge: models that do not fit together are refused before anything is written") {
  const TempDir root("errors");
  const auto dirs = three_models(root.path);
  const fs::path out = root.path / "out";
  mx::Config wide = dense(mx::Family::mistral);
  wide.hidden_size = 48;
  mx::write_random_checkpoint(root.path / "wide", wide, 5);
  mx::Config deep = dense(mx::Family::mistral);
  deep.num_layers = 3;
  mx::write_random_checkpoint(root.path / "deep", deep, 6);
  mx::write_random_checkpoint(root.path / "llama", dense(mx::Family::llama), 7);
  mx::Config sparse = mx::tiny_config(64);
  mx::write_random_checkpoint(root.path / "mixtral", sparse, 8);

  const auto refuse = [&](mg::MergeConfig c, ErrorCode code, std::initializer_list<std::string> message) {
    require_error([&] { mg::merge(c, out); }, code, message);
    CHECK_FALSE(fs::exists(out));
  };
  auto c = config_of(dirs);
  c.experts[1].source_model = (root.path / "wide").string();
  refuse(c, ErrorCode::shape_mismatch, {"experts[1].source_model", "has hidden_size 48, base_model 32"});
  c = config_of(dirs);
  c.experts[2].source_model = (root.path / "deep").string();
  refuse(c, ErrorCode::shape_mismatch, {"experts[2].source_model", "num_hidden_layers 3, base_model 2"});
  c = config_of(dirs);
  c.experts[0].source_model = (root.path / "llama").string();
  refuse(c, ErrorCode::unsupported, {"is a llama model and base_model a mistral one"});
  c = config_of(dirs);
  c.base_model = (root.path / "mixtral").string();
  refuse(c, ErrorCode::unsupported, {"base_model is a mixtral model"});
  c = config_of(dirs);
  c.experts[1].source_model = "mlabonne/AlphaMonarch-7B";
  refuse(c, ErrorCode::bad_file, {"'mlabonne/AlphaMonarch-7B' is not a local folder", "huggingface-cli download"});
  {  // an expert whose tensors do not match its own config.json: the decoder's check, naming the tensor
    const fs::path broken = root.path / "broken";
    mx::write_random_checkpoint(broken, dense(mx::Family::mistral), 9);
    nlohmann::json j = io::read_json(broken / "config.json");
    j["num_key_value_heads"] = 4;
    std::ofstream(broken / "config.json") << j.dump();
    c = config_of(dirs);
    c.experts[2].source_model = broken.string();
    refuse(c, ErrorCode::shape_mismatch, {"model.layers.0.self_attn.k_proj.weight"});
  }
  c = config_of(dirs, mg::GateMode::cheap_embed);
  refuse(c, ErrorCode::invalid_argument, {"gate_mode cheap_embed tokenises the prompts", "none was given"});
  c = config_of(dirs, mg::GateMode::hidden);  // mergekit's own check comes first
  c.experts[0].positive_prompts.clear();
  refuse(c, ErrorCode::invalid_argument, {"Expert 0 has no positive prompts."});
}

namespace {
/// Prompts as fixed token ids, for the gate maths without a tokenizer: a
/// prompt "3 7 9" is the ids {1, 3, 7, 9} (BOS first, as mergekit's).
mg::PromptTokenizer id_prompts() {
  mg::PromptTokenizer t;
  t.pad_id = 1;
  t.encode = [](const std::string& prompt) {
    std::vector<std::int32_t> ids{1};
    std::istringstream in(prompt);
    for (std::int32_t id = 0; in >> id;) ids.push_back(id);
    return ids;
  };
  return t;
}

std::vector<float> embedding_row(const io::Checkpoint& ckpt, std::int32_t id) {
  const io::TensorView& e = ckpt.tensor(mx::names::embed);
  std::vector<float> row(std::size_t(e.shape[1]));
  widen_to_float(e.data, e.dtype, index_t(id) * e.shape[1], e.shape[1], row.data());
  return row;
}

/// v / ‖v‖ in double.
std::vector<double> unit(std::vector<double> v) {
  double n = 0;
  for (double x : v) n += x * x;
  for (double& x : v) x /= std::sqrt(n);
  return v;
}

double max_diff(const std::vector<float>& row, const std::vector<double>& want) {
  double d = 0;
  for (std::size_t i = 0; i < want.size(); ++i) d = std::max(d, std::abs(double(row[i]) - want[i]));
  return d;
}
}  // namespace

TEST_CASE("merge gates: cheap_embed is the normalised embedding sum, positives minus negatives, every layer") {
  const TempDir root("cheap");
  const auto dirs = three_models(root.path);
  mg::MergeConfig c = config_of(dirs, mg::GateMode::cheap_embed);
  c.experts[0].positive_prompts = {"5 6", "7"};
  c.experts[1].positive_prompts = {"9 9 9"};
  c.experts[2].positive_prompts = {"11"};
  c.experts[2].negative_prompts = {"12 13"};
  std::ofstream(fs::path(dirs[0]) / "tokenizer_config.json") << R"({"bos_token": "<s>", "eos_token": "</s>"})";
  const fs::path out = root.path / "moe";
  mg::MergeOptions o;
  o.tokenizer = id_prompts();
  mg::merge(c, out, o);
  CHECK(io::read_json(out / "tokenizer_config.json")["pad_token"] == "<s>");  // mergekit pads with BOS
  const io::Checkpoint base(dirs[0]), merged(out);
  const auto sum = [&](std::initializer_list<std::int32_t> ids) {
    std::vector<double> s(32, 0.0);
    for (std::int32_t id : ids) {
      const auto row = embedding_row(base, id);
      for (std::size_t h = 0; h < s.size(); ++h) s[h] += row[h];
    }
    return s;
  };
  const std::vector<double> want0 = unit(sum({1, 5, 6, 1, 7})), want1 = unit(sum({1, 9, 9, 9}));
  std::vector<double> pos = unit(sum({1, 11})), neg = unit(sum({1, 12, 13})), want2(32);
  for (std::size_t h = 0; h < 32; ++h) want2[h] = pos[h] - neg[h];
  want2 = unit(want2);
  for (index_t l = 0; l < 2; ++l) {
    const auto g = merged.tensor(mx::names::router(l)).to_vector<float>();
    CHECK(max_diff({g.begin(), g.begin() + 32}, want0) < 1e-6);
    CHECK(max_diff({g.begin() + 32, g.begin() + 64}, want1) < 1e-6);
    CHECK(max_diff({g.begin() + 64, g.end()}, want2) < 1e-6);
  }
  // No tokenizer, or an id outside the vocabulary: clear errors.
  require_error([&] { mg::merge(c, root.path / "none"); }, ErrorCode::invalid_argument,
                {"gate_mode cheap_embed tokenises the prompts", "needs a tokenizer.model"});
  c.experts[1].positive_prompts = {"64"};
  require_error([&] { mg::merge(c, root.path / "bad", o); }, ErrorCode::invalid_argument,
                {"prompt token id 64 is outside the base model's vocabulary [0, 64)"});
  CHECK_FALSE(fs::exists(root.path / "bad"));
}

TEST_CASE("merge gates: hidden takes the residual stream entering each layer at the last token; hidden_avg pads") {
  const TempDir root("hidden");
  const auto dirs = three_models(root.path);
  mg::MergeConfig c = config_of(dirs, mg::GateMode::hidden);
  c.experts[0].positive_prompts = {"5 6 7", "8"};
  c.experts[1].positive_prompts = {"9 10"};
  c.experts[2].positive_prompts = {"11 12"};
  c.experts[2].negative_prompts = {"13"};
  mg::MergeOptions o;
  o.tokenizer = id_prompts();
  mg::merge(c, root.path / "hidden", o);
  const io::Checkpoint base(dirs[0]), merged(root.path / "hidden");

  // Layer 0's stream is the embedding: its row is the mean last-token
  // embedding, normalised, with no model run in the check.
  const auto g0 = merged.tensor(mx::names::router(0)).to_vector<float>();
  const auto e7 = embedding_row(base, 7), e8 = embedding_row(base, 8), e12 = embedding_row(base, 12),
             e13 = embedding_row(base, 13);
  std::vector<double> want(32), want2(32);
  for (std::size_t h = 0; h < 32; ++h) {
    want[h] = (double(e7[h]) + e8[h]) / 2;
    want2[h] = double(e12[h]) - e13[h];
  }
  CHECK(max_diff({g0.begin(), g0.begin() + 32}, unit(want)) < 1e-6);
  CHECK(max_diff({g0.begin() + 64, g0.end()}, unit(want2)) < 1e-6);
  // Layer 1's: the decoder's own stream after layer 0 (Trace), last token.
  const mx::Model<backend::Reference> model(dirs[0]);
  const auto stream_after_layer0 = [&](std::vector<std::int32_t> ids) {
    mx::KvCache cache = model.new_cache();
    mx::Trace trace;
    (void)model.forward(ids, cache, mx::Logits::last, &trace);
    const Matrix& h = trace.layers[0].hidden_out;
    return std::vector<double>(h.row(h.rows() - 1).data(), h.row(h.rows() - 1).data() + 32);
  };
  const auto a = stream_after_layer0({1, 5, 6, 7}), b = stream_after_layer0({1, 8});
  for (std::size_t h = 0; h < 32; ++h) want[h] = (a[h] + b[h]) / 2;
  const auto g1 = merged.tensor(mx::names::router(1)).to_vector<float>();
  CHECK(max_diff({g1.begin(), g1.begin() + 32}, unit(want)) < 1e-5);

  // hidden_avg, layer 0: every position of the left-padded batch (width 4),
  // pads (BOS) included: (e1+e5+e6+e7)/4 and (3·e1 + e8)/4 (the pad is
  // BOS), averaged over the two prompts.
  c.gate_mode = mg::GateMode::hidden_avg;
  mg::merge(c, root.path / "avg", o);
  const io::Checkpoint averaged(root.path / "avg");
  const auto avg0 = averaged.tensor(mx::names::router(0)).to_vector<float>();
  const auto e1 = embedding_row(base, 1), e5 = embedding_row(base, 5), e6 = embedding_row(base, 6);
  for (std::size_t h = 0; h < 32; ++h)
    want[h] = ((double(e1[h]) + e5[h] + e6[h] + e7[h]) / 4 + (3.0 * e1[h] + e8[h]) / 4) / 2;
  CHECK(max_diff({avg0.begin(), avg0.begin() + 32}, unit(want)) < 1e-6);
  mg::MergeOptions bad_pad = o;
  bad_pad.tokenizer.pad_id = 64;
  require_error([&] { mg::merge(c, root.path / "bad-pad", bad_pad); }, ErrorCode::invalid_argument,
                {"pad token id 64 is outside the base model's vocabulary [0, 64)"});
  // A pad attends to nothing, so it passes through the FFNs alone.
  const auto pads = mg::pad_states(model, 1);
  REQUIRE(pads.size() == 2);
  CHECK(max_diff(std::vector<float>(pads[0].data(), pads[0].data() + 32), std::vector<double>(e1.begin(), e1.end())) ==
        0);
  const mx::DecoderLayerWeights& l0 = model.weights().layers[0];
  Matrix x(1, 32), normed(1, 32);
  std::copy(e1.begin(), e1.end(), x.row(0).data());
  mx::rms_norm(x, l0.post_norm, model.config().rms_norm_eps, normed);
  std::vector<double> ffn(32, 0.0);
  for (index_t f = 0; f < 48; ++f) {  // SwiGLU by hand: down · (silu(gate·x) ⊙ up·x)
    double g = 0, u = 0;
    for (index_t h = 0; h < 32; ++h) {
      g += double(l0.moe.experts[0].gate.at(f, h)) * normed(0, h);
      u += double(l0.moe.experts[0].up.at(f, h)) * normed(0, h);
    }
    const double act = g / (1 + std::exp(-g)) * u;
    for (index_t h = 0; h < 32; ++h) ffn[std::size_t(h)] += double(l0.moe.experts[0].down.at(h, f)) * act;
  }
  for (std::size_t h = 0; h < 32; ++h) ffn[h] += e1[h];
  CHECK(max_diff(std::vector<float>(pads[1].data(), pads[1].data() + 32), ffn) < 1e-5);
}

TEST_CASE("merge: the fused transformers-5 layout holds the same bits and runs the same") {
  const TempDir root("fused");
  const auto dirs = three_models(root.path);
  mg::MergeOptions o = seeded(2), fused = seeded(2);
  fused.layout = mg::ExpertLayout::fused;
  mg::merge(config_of(dirs), root.path / "per-expert", o);
  mg::merge(config_of(dirs), root.path / "fused", fused);
  const io::Checkpoint a(root.path / "per-expert"), b(root.path / "fused");
  CHECK(b.find(mx::names::expert(0, 0, "w1")) == nullptr);
  const io::TensorView& gate_up = b.tensor(mx::names::fused_gate_up(1));
  const io::TensorView& down = b.tensor(mx::names::fused_down(1));
  CHECK(gate_up.shape == std::vector<index_t>{3, 96, 32});
  CHECK(down.shape == std::vector<index_t>{3, 32, 48});
  const std::size_t m = 48 * 32 * 4;  // bytes of one [48, 32] float32 matrix
  for (index_t e = 0; e < 3; ++e) {   // expert e: gate rows, then up rows; its down matrix
    CHECK(std::memcmp(gate_up.data + 2 * m * std::size_t(e), a.tensor(mx::names::expert(1, e, "w1")).data, m) == 0);
    CHECK(std::memcmp(gate_up.data + 2 * m * std::size_t(e) + m, a.tensor(mx::names::expert(1, e, "w3")).data, m) == 0);
    CHECK(std::memcmp(down.data + m * std::size_t(e), a.tensor(mx::names::expert(1, e, "w2")).data, m) == 0);
  }
  CHECK(same_bytes(b.tensor(mx::names::fused_router(0)), a.tensor(mx::names::router(0))));
  const mx::Model<backend::Reference> pa(root.path / "per-expert"), pb(root.path / "fused");
  const std::vector<std::int32_t> ids{1, 7, 3, 30};
  mx::KvCache ca = pa.new_cache(), cb = pb.new_cache();
  CHECK(pa.forward(ids, ca).logits == pb.forward(ids, cb).logits);
}
