// Block-quantised weights (ggml's Q4_0 … Q6_K, as GGUF files store them) as
// weights of the execution contract: a layer on them computes what it
// computes on their dequantised values, on every backend, without a
// dequantised copy; and the decoder runs a GGUF file directly (q and k
// in ggml's row order, RoPE on adjacent pairs) with the logits of the
// Hugging Face checkpoint it came from.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/io/gguf_convert.hpp>
#include <moe/io/gguf_from_hf.hpp>
#include <moe/io/gguf_writer.hpp>
#include <moe/layer/presets.hpp>
#include <moe/layer/weight_store.hpp>
#include <moe/models/mixtral.hpp>
#include <moe/quant/ggml_blocks.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

using namespace moe;
namespace fs = std::filesystem;

namespace {

constexpr DType block_types[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                                 DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

/// Byte offsets of a block's fp16 scale fields (d, and dmin or m).
std::vector<int> half_fields(DType d) {
  switch (d) {
    case DType::Q4_1:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
      return {0, 2};
    case DType::Q2_K:
      return {80, 82};
    case DType::Q3_K:
      return {108};
    case DType::Q6_K:
      return {208};
    default:
      return {0};
  }
}

/// rows × cols values of dtype d as random blocks: random bits, fp16 scales
/// drawn from [0.002, 0.03] so that the values are of a weight's size.
std::vector<unsigned char> random_blocks(DType d, index_t rows, index_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> b(std::size_t(bytes_of(d, rows * cols)));
  for (unsigned char& x : b) x = static_cast<unsigned char>(rng());
  std::uniform_real_distribution<float> scale(0.002f, 0.03f);
  for (std::size_t k = 0; k < b.size(); k += std::size_t(size_of(d)))
    for (const int f : half_fields(d)) {
      const std::uint16_t h = quant::float_to_half(scale(rng));
      std::memcpy(&b[k + std::size_t(f)], &h, 2);
    }
  return b;
}

std::vector<float> dequantised(DType d, const std::vector<unsigned char>& blocks, index_t n) {
  std::vector<float> v(std::size_t(n), 0.0f);
  widen_to_float(blocks.data(), d, 0, n, v.data());
  return v;
}

double relative_error(const Matrix& a, const Matrix& b) {
  return double(test::max_abs_diff(a, b)) / std::max(1.0, double(b.cwiseAbs().maxCoeff()));
}

/// A Mixtral layer whose experts hold block-quantised weights, and the
/// same layer on their dequantised values as fp32.
struct BlockLayer {
  LayerConfig config{.d_model = 256, .d_ff = 512, .num_experts = 4, .seed = 3};
  std::vector<std::vector<unsigned char>> blocks;
  std::vector<std::vector<float>> values;
  Matrix router = random_normal_matrix(4, 256, 11, 0.1f);
  LayerWeights quantised, widened;

  explicit BlockLayer(DType d) {
    quantised.router.gate = widened.router.gate = weight_view(router.data(), 4, 256);
    std::uint64_t seed = 100;
    const auto matrix = [&](index_t rows, index_t cols, WeightMatrix& q, WeightMatrix& f) {
      blocks.push_back(random_blocks(d, rows, cols, seed++));
      values.push_back(dequantised(d, blocks.back(), rows * cols));
      q = {blocks.back().data(), d, rows, cols};
      f = weight_view(values.back().data(), rows, cols);
    };
    blocks.reserve(12);
    values.reserve(12);
    for (index_t e = 0; e < config.num_experts; ++e) {
      ExpertWeights q, f;
      matrix(config.d_ff, config.d_model, q.gate, f.gate);
      matrix(config.d_ff, config.d_model, q.up, f.up);
      matrix(config.d_model, config.d_ff, q.down, f.down);
      quantised.experts.push_back(q);
      widened.experts.push_back(f);
    }
  }
};

}  // namespace

TEST_CASE("block-quantised experts: every backend computes on the dequantised values, no copy") {
  for (const DType d : block_types) {
    CAPTURE(name(d));
    const BlockLayer w(d);
    const Matrix want_many = make_layer<presets::Mixtral, backend::Reference>(w.config, w.widened)
                                 .forward(random_normal_matrix(37, 256, 5))
                                 .y;
    const Matrix want_one = make_layer<presets::Mixtral, backend::Reference>(w.config, w.widened)
                                .forward(random_normal_matrix(1, 256, 6))
                                .y;
    {
      auto layer = make_layer<presets::Mixtral, backend::Reference>(w.config, w.quantised);
      CHECK(relative_error(layer.forward(random_normal_matrix(37, 256, 5)).y, want_many) <= 1e-6);
    }
    auto layer = make_layer<presets::Mixtral, backend::Cpu<>>(w.config, w.quantised, backend::Cpu<>(2));
    CHECK(layer.pack_weights() == 0);  // stays in its blocks: fp32 panels would be a dequantised copy
    CHECK(!layer.prepared().from.holds_copy);
    CHECK(relative_error(layer.forward(random_normal_matrix(37, 256, 5)).y, want_many) <= 1e-5);
    CHECK(relative_error(layer.forward(random_normal_matrix(1, 256, 6)).y, want_one) <= 1e-5);
  }
}

TEST_CASE("block-quantised weights: sizes, element access, non-finite scales, ragged rows") {
  CHECK(bytes_of(DType::Q8_0, 64) == 68);
  CHECK(bytes_of(DType::Q4_K, 512) == 288);
  CHECK(bytes_of(DType::F32, 3) == 12);
  const std::vector<unsigned char> b = random_blocks(DType::Q5_K, 2, 512, 1);
  const std::vector<float> v = dequantised(DType::Q5_K, b, 1024);
  const WeightMatrix w{b.data(), DType::Q5_K, 2, 512};
  CHECK(w.at(1, 300) == v[512 + 300]);
  CHECK(w.row_bytes(1) == b.data() + 2 * 176);
  CHECK(first_non_finite(b.data(), DType::Q5_K, 1024) == -1);

  // An infinite dmin in the third super-block: its first value is -inf or NaN.
  std::vector<unsigned char> bad = b;
  const std::uint16_t inf = 0x7C00;
  std::memcpy(&bad[2 * 176 + 2], &inf, 2);
  CHECK(first_non_finite(bad.data(), DType::Q5_K, 1024) == 512);
  test::require_error(
      [&] {
        detail::require_finite({bad.data(), DType::Q5_K, 2, 512}, "expert 0 up weight");
      },
      ErrorCode::non_finite, {"expert 0 up weight", "element [1, 0]"});
  test::require_error(
      [&] {
        detail::require_weight({b.data(), DType::Q5_K, 4, 256 + 32}, "w", 4, 288);
      },
      ErrorCode::shape_mismatch, {"288 columns are not whole Q5_K blocks of 256"});
}

TEST_CASE("the decoder on a GGUF file: the Hugging Face checkpoint's logits, q and k in ggml's order") {
  const fs::path golden = fs::path(MOE_TEST_DATA_DIR) / "golden" / "models" / "mixtral_tiny_f32";
  const fs::path f32 = fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "mixtral_tiny_f32.gguf";
  const std::vector<std::int32_t> ids = {1, 17, 200, 5, 99, 3};
  const mixtral::Model<> reference(golden);
  auto c0 = reference.new_cache();
  const Matrix want = reference.forward(ids, c0).logits;

  const mixtral::Model<> direct(f32);
  CHECK(direct.config().rope_pairs == mixtral::RopePairs::adjacent);
  CHECK(direct.config().num_experts == reference.config().num_experts);
  CHECK(direct.checkpoint().gguf() != nullptr);
  auto c1 = direct.new_cache();
  // The same weights; only the order of each head's dot products differs.
  CHECK(relative_error(direct.forward(ids, c1).logits, want) <= 1e-6);

  // Quantised by moe-quantize's writer: the GGUF run in its blocks gives
  // the logits of its own dequantised conversion (the same weights in fp32).
  const test::TempDir dir("gguf-model");
  for (const std::uint32_t type : {8u, 2u, 3u, 6u, 7u}) {
    CAPTURE(type);
    const fs::path file = dir.path / detail::cat("m", type, ".gguf");
    io::write_gguf(golden, file, type);
    io::convert_gguf(io::Gguf(file), dir.path / detail::cat("m", type), DType::F32);
    mixtral::Model<> quantised(file);
    const mixtral::Model<> widened(dir.path / detail::cat("m", type));
    CHECK(quantised.pack_experts() == 0);
    CHECK(quantised.weight_bytes() < reference.weight_bytes() / 3);
    auto a = quantised.new_cache();
    auto b = widened.new_cache();
    const Matrix got = quantised.forward(ids, a).logits, widened_logits = widened.forward(ids, b).logits;
    CHECK(relative_error(got, widened_logits) <= 1e-5);
    CHECK(relative_error(got, want) > 1e-5);  // it really ran on the quantised weights
    // Decode continues from the cache as on the folder.
    const std::vector<std::int32_t> next = {42};
    CHECK(relative_error(quantised.forward(next, a).logits, widened.forward(next, b).logits) <= 1e-5);
  }
}

TEST_CASE("a GGUF checkpoint: what the decoder cannot run is an error naming the tensor") {
  const fs::path golden = fs::path(MOE_TEST_DATA_DIR) / "golden" / "models" / "mixtral_tiny_f32";
  const test::TempDir dir("gguf-model-bad");
  // The golden model's GGUF with one matrix in a type moe does not compute with (IQ4_NL, code 20).
  const io::Gguf g(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "mixtral_tiny_f32.gguf");
  io::GgufWriter w;
  for (const auto& [key, value] : g.metadata())
    if (value.type == io::gguf::ValueType::string)
      w.add_string(key, g.get_string(key));
    else if (value.type == io::gguf::ValueType::f32)
      w.add_f32(key, float(g.get_float(key)));
    else if (value.type == io::gguf::ValueType::u32)
      w.add_u32(key, std::uint32_t(g.get_int(key)));
  for (const io::GgufTensor& t : g.tensors()) {
    const bool odd = t.name == "blk.1.attn_v.weight";
    w.add_tensor(t.name, t.ne, odd ? 20u : t.type, [&t, odd](unsigned char* dst) {
      if (!odd) std::memcpy(dst, t.data, t.nbytes);
    });
  }
  w.write(dir.path / "odd.gguf");
  test::require_error([&] { const mixtral::Model<> m(dir.path / "odd.gguf"); }, ErrorCode::unsupported,
                      {"odd.gguf", "'blk.1.attn_v.weight' is IQ4_NL", "does not compute with"});
  test::require_error([&] { const mixtral::Model<> m(dir.path / "none.gguf"); }, ErrorCode::bad_file, {"none.gguf"});
}
