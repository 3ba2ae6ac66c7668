// Block-quantised weights (ggml's Q4_0 … Q6_K, as GGUF files store them) as
// weights of the execution contract: a layer on them computes what it
// computes on their dequantised values, on every backend, without a
// dequantised copy; and the decoder runs a GGUF file directly (q and k
// in ggml's row order, RoPE on adjacent pairs) with the logits of the
// Hugging Face checkpoint it came from.
#include "block_weights.hpp"
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/io/gguf_convert.hpp>
#include <moe/quant/q8_activations.hpp>
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

double relative_error(const Matrix& a, const Matrix& b) {
  return double(test::max_abs_diff(a, b)) / std::max(1.0, double(b.cwiseAbs().maxCoeff()));
}

using test::block_types;
using test::BlockLayer;

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

TEST_CASE("block-quantised experts: down projections in another block format, as Q4_K_M files store them") {
  const BlockLayer w(DType::Q4_K, 256, 256, DType::Q6_K);
  CHECK(w.quantised.experts[0].down.dtype == DType::Q6_K);
  for (const index_t T : {1, 40}) {
    CAPTURE(T);
    const Matrix x = random_normal_matrix(T, 256, 7);
    const Matrix want = make_layer<presets::Mixtral, backend::Reference>(w.config, w.widened).forward(x).y;
    const auto layer = make_layer<presets::Mixtral, backend::Cpu<>>(w.config, w.quantised, backend::Cpu<>(2));
    CHECK(relative_error(layer.forward(x).y, want) <= 1e-5);
  }
  // Block formats mix only among themselves: an F32 down beside Q4_K up is refused.
  LayerWeights odd = w.quantised;
  odd.experts[1].down = w.widened.experts[1].down;
  test::require_error([&] { (void)make_layer<presets::Mixtral, backend::Reference>(w.config, odd); },
                      ErrorCode::dtype_mismatch, {"expert 1 weights", "up is Q4_K but down is F32"});
}

namespace {

/// One expert's SwiGLU on row x the way numerics::BlockQ8 defines it, scalar:
/// x quantised for gate/up's format, each output a reference q8_dot, the
/// hidden row quantised for down's format, each output a q8_dot again.
std::vector<float> q8_expert(const ExpertWeights& e, const float* x) {
  const index_t d_model = e.up.cols, d_ff = e.up.rows;
  const auto dot_rows = [](const WeightMatrix& w, const float* in) {
    quant::Q8Rows q;
    quant::quantize_activations(in, w.cols, 1, w.cols, quant::activation_blocks(w.dtype), q);
    std::vector<float> y(static_cast<std::size_t>(w.rows));
    for (index_t r = 0; r < w.rows; ++r) y[std::size_t(r)] = quant::q8_dot(w.dtype, w.row_bytes(r), q, 0);
    return y;
  };
  const std::vector<float> gate = dot_rows(e.gate, x), up = dot_rows(e.up, x);
  std::vector<float> h(static_cast<std::size_t>(d_ff));
  for (index_t f = 0; f < d_ff; ++f) {
    const float g = gate[std::size_t(f)];
    h[std::size_t(f)] = g / (1.0f + std::exp(-g)) * up[std::size_t(f)];
  }
  std::vector<float> y = dot_rows(e.down, h.data());
  (void)d_model;
  return y;
}

}  // namespace

TEST_CASE("numerics::BlockQ8: llama.cpp's arithmetic on block weights, every ISA, decode and prefill") {
  // Expected: the scalar emulation above, combined with the layer's own
  // routing weights (routing is fp32 in every numerics).
  for (const auto& [d, down] : std::vector<std::pair<DType, DType>>{{DType::Q4_0, DType::Q4_0},
                                                                    {DType::Q4_1, DType::Q4_1},
                                                                    {DType::Q8_0, DType::Q8_0},
                                                                    {DType::Q5_1, DType::Q5_0},
                                                                    {DType::Q4_K, DType::Q6_K},
                                                                    {DType::Q5_K, DType::Q3_K},
                                                                    {DType::Q2_K, DType::Q4_0}}) {
    CAPTURE(name(d));
    CAPTURE(name(down));
    const BlockLayer w(d, 512, 256, down);
    for (const index_t T : {1, 3, 40}) {
      CAPTURE(T);
      const Matrix x = random_normal_matrix(T, 512, std::uint64_t(20 + T));
      const auto check = [&]<class I>() {
        CAPTURE(I::name);
        using B = backend::Cpu<numerics::BlockQ8, I>;
        auto layer = make_layer<presets::Mixtral, B>(w.config, w.quantised, B(2));
        CHECK(layer.pack_weights() == 0);
        const Output out = layer.forward(x);
        Matrix want = Matrix::Zero(T, 512);
        for (index_t t = 0; t < T; ++t)
          for (int j = 0; j < out.routing.k; ++j) {
            const std::vector<float> y =
                q8_expert(w.quantised.experts[std::size_t(out.routing.expert_at(t, j))], x.row(t).data());
            for (index_t c = 0; c < 512; ++c) want(t, c) += out.routing.weight_at(t, j) * y[std::size_t(c)];
          }
        // The kernels' sums agree with the reference to a few ulps
        // (test-q8-dot), but an ulp in the hidden units can move one across
        // an 8-bit rounding boundary when they are quantised for the down
        // projection: a step of 1/254 of its block's largest value.
        CHECK(relative_error(out.y, want) <= 2e-3);
        // And near the fp32 layer on the same weights: the activations'
        // 8-bit rounding, and Q8_1's fp16 sums times the Q4_1/Q5_1 minimums
        // (random blocks have minimums as large as their steps: 4e-2 seen).
        const Matrix fp32 = make_layer<presets::Mixtral, backend::Reference>(w.config, w.widened).forward(x).y;
        CHECK(relative_error(out.y, fp32) <= 6e-2);
      };
      check.template operator()<isa::Native>();
#if defined(__x86_64__)
      if constexpr (!std::is_same_v<isa::Native, isa::Baseline>) check.template operator()<isa::Baseline>();
#endif
#if XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2
      if constexpr (!std::is_same_v<isa::Native, isa::Avx2>) check.template operator()<isa::Avx2>();
#endif
    }
  }
}

TEST_CASE("block-quantised weights: sizes, element access, non-finite scales, ragged rows") {
  CHECK(bytes_of(DType::Q8_0, 64) == 68);
  CHECK(bytes_of(DType::Q4_K, 512) == 288);
  CHECK(bytes_of(DType::F32, 3) == 12);
  const std::vector<unsigned char> b = test::random_blocks(DType::Q5_K, 2, 512, 1);
  const std::vector<float> v = test::dequantised(DType::Q5_K, b, 1024);
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
  const Matrix mapped = direct.forward(ids, c1).logits;
  CHECK(relative_error(mapped, want) <= 1e-6);
  // Read into memory (--no-mmap): the views keep their addresses, the bytes theirs.
  const void* embedding = direct.checkpoint().gguf()->tensor("token_embd.weight").data;
  direct.checkpoint().read_into_memory();
  direct.checkpoint().read_into_memory();  // twice: no-op
  CHECK(direct.checkpoint().gguf()->tensor("token_embd.weight").data == embedding);
  auto c2 = direct.new_cache();
  CHECK((direct.forward(ids, c2).logits.array() == mapped.array()).all());

  // Quantised by moe-quantize's writer: the GGUF run in its blocks gives
  // the logits of its own dequantised conversion (the same weights in fp32).
  const test::TempDir dir("gguf-model");
  for (const std::string type : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}) {
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
    // A prompt of 40: the projections and the experts on the panel path
    // (block_linear, run_blocks) instead of the streaming one.
    std::vector<std::int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 5) % 257);
    auto a40 = quantised.new_cache();
    auto b40 = widened.new_cache();
    CHECK(relative_error(quantised.forward(prompt, a40).logits, widened.forward(prompt, b40).logits) <= 1e-5);
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
