// Activations quantised per block and integer dot products with block
// weights (moe/quant/q8_activations.hpp, moe/backend/cpu/q8_dot.hpp) against
// llama.cpp's CPU backend itself: tests/data/cases/gguf/q8_dot.safetensors
// (tests/cases/make_q8_dot_cases.py) holds activation rows (zeros, ties at
// .5, outliers of either sign, 1e-30s, constants, blocks at 1e-8 … 1e7,
// seeded normals), the Q8_0 / Q8_1 / Q8_K blocks ggml makes of them, weight
// rows of every block type and ggml's vec_dot of each pair.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "moe/backend/cpu/q8_dot.hpp"
#include "moe/backend/cpu/q8_panels.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/quant/ggml_blocks.hpp"
#include "moe/quant/block_formats.hpp"
#include "moe/quant/q8_activations.hpp"

namespace fs = std::filesystem;
using namespace moe;

namespace {

const io::SafeTensors& cases() {
  static const io::SafeTensors file(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "q8_dot.safetensors");
  return file;
}

struct Activations {
  index_t rows = 0, cols = 0;
  std::vector<float> x;
};
Activations activations() {
  const io::TensorView t = cases().tensor("input");
  return {t.shape[0], t.shape[1], t.to_vector<float>()};
}

const std::vector<std::pair<const char*, DType>> weight_types = {
    {"Q4_0", DType::Q4_0}, {"Q4_1", DType::Q4_1}, {"Q5_0", DType::Q5_0}, {"Q5_1", DType::Q5_1}, {"Q8_0", DType::Q8_0},
    {"Q2_K", DType::Q2_K}, {"Q3_K", DType::Q3_K}, {"Q4_K", DType::Q4_K}, {"Q5_K", DType::Q5_K}, {"Q6_K", DType::Q6_K}};

float half_bits(const std::uint8_t* p) { return quant::detail::half_at(p); }

}  // namespace

TEST_CASE("q8 activations: the bytes llama.cpp's CPU backend makes") {
  const Activations a = activations();
  for (const auto blocks :
       {quant::ActivationBlocks::q8_0, quant::ActivationBlocks::q8_1, quant::ActivationBlocks::q8_k}) {
    const bool k = blocks == quant::ActivationBlocks::q8_k, one = blocks == quant::ActivationBlocks::q8_1;
    const char* name = k ? "Q8_K" : one ? "Q8_1" : "Q8_0";
    CAPTURE(name);
    quant::Q8Rows ours;
    quant::quantize_activations(a.x.data(), a.cols, a.rows, a.cols, blocks, ours);
    const std::vector<std::uint8_t> ggml = cases().tensor(name).to_vector<std::uint8_t>();
    const index_t block = quant::activation_block(blocks), block_bytes = k ? 292 : one ? 36 : 34;
    REQUIRE(index_t(ggml.size()) == a.rows * a.cols / block * block_bytes);
    index_t differing = 0;
    for (index_t b = 0; b < a.rows * a.cols / block; ++b) {
      const std::uint8_t* g = ggml.data() + b * block_bytes;
      bool same = true;
      if (k) {
        float d;
        std::memcpy(&d, g, 4);
        same = std::memcmp(&d, &ours.d[std::size_t(b)], 4) == 0;
        same = same && std::memcmp(g + 4, ours.q.data() + b * 256, 256) == 0;
        for (int h = 0; h < 16; ++h) {
          std::int16_t s;
          std::memcpy(&s, g + 260 + 2 * h, 2);
          // ggml leaves bsums unset for an all-zero block (its d = 0 makes them unread).
          if (d != 0.0f) same = same && s == ours.sums[std::size_t(b * 16 + h)];
        }
      } else {
        same =
            half_bits(g) == ours.d[std::size_t(b)] && std::memcmp(g + (one ? 4 : 2), ours.q.data() + b * 32, 32) == 0;
        if (one) same = same && half_bits(g + 2) == ours.s[std::size_t(b)];
      }
      if (!same && differing++ == 0) MESSAGE("first differing block: ", b);
    }
    CHECK(differing == 0);
  }
}

TEST_CASE("q8 dot: the reference sums as llama.cpp's vec_dot") {
  const Activations a = activations();
  for (const auto& [name, f] : weight_types) {
    CAPTURE(std::string(name));
    const std::vector<std::uint8_t> w = cases().tensor(std::string(name) + ".weights").to_vector<std::uint8_t>();
    const io::TensorView dots = cases().tensor(std::string(name) + ".dots");
    const std::vector<float> expected = dots.to_vector<float>();
    const index_t W = dots.shape[1], row_bytes = bytes_of(f, a.cols);
    REQUIRE(index_t(w.size()) == W * row_bytes);
    quant::Q8Rows q;
    quant::quantize_activations(a.x.data(), a.cols, a.rows, a.cols, quant::activation_blocks(f), q);
    std::vector<float> dequantised(std::size_t(a.cols));
    for (index_t r = 0; r < W; ++r) {
      const unsigned char* row = w.data() + r * row_bytes;
      // The bound: ggml adds the same per-block floats in another order, so
      // the two differ by a few ulps of the sum of the terms' magnitudes.
      widen_to_float(row, f, 0, a.cols, dequantised.data());
      for (index_t i = 0; i < a.rows; ++i) {
        double magnitude = 0;
        for (index_t c = 0; c < a.cols; ++c)
          magnitude += std::fabs(double(dequantised[std::size_t(c)]) * a.x[std::size_t(i * a.cols + c)]);
        const float ours = quant::q8_dot(f, row, q, i), theirs = expected[std::size_t(i * W + r)];
        CAPTURE(i);
        CAPTURE(r);
        if (!std::isfinite(theirs)) {
          // An fp16 activation scale past 65504 (the 1e7 blocks): ggml's
          // lanes give inf · 0 = NaN where ours give inf; non-finite both.
          CHECK(!std::isfinite(ours));
          continue;
        }
        CHECK(std::fabs(double(ours) - theirs) <= 1e-5 * magnitude + 1e-30);
      }
    }
  }
}

TEST_CASE("q8 dot: block integers are the block's values") {
  // value = d · scale · q − dmin · min (legacy: d · q + m), as dequantisation gives.
  for (const auto& [name, f] : weight_types) {
    CAPTURE(std::string(name));
    const std::vector<std::uint8_t> w = cases().tensor(std::string(name) + ".weights").to_vector<std::uint8_t>();
    const index_t n = block_size(f);
    quant::BlockIntegers bi;
    std::vector<float> y(static_cast<std::size_t>(n));
    for (index_t b = 0; b < index_t(w.size()) / size_of(f); ++b) {
      const unsigned char* block = w.data() + b * size_of(f);
      quant::block_integers(f, block, bi);
      REQUIRE(bi.values == n);
      dequantize_block(f, block, y.data());
      for (index_t e = 0; e < n; ++e) {
        const int g = int(e) / bi.group;
        const double v = n == 32 ? double(bi.d) * bi.q[e] + bi.m
                                 : double(bi.d) * bi.scale[g] * bi.q[e] - double(bi.dmin) * bi.min[g];
        CHECK(std::fabs(v - y[std::size_t(e)]) <= 1e-6 * (std::fabs(v) + std::fabs(double(bi.dmin) * 64)) + 1e-30);
      }
    }
  }
}

namespace {

/// Calls f(I{}) for every ISA this unit carries that this CPU runs.
template <class F, class... I>
void for_each(F&& f, isa::List<I...>) {
  (
      [&] {
        if (int(isa::cpu_level()) >= I::level) f(I{});
      }(),
      ...);
}

/// `rows` rows of `cols` values of format f, quantised from seeded normals
/// at a few scales by quant::quantize.
std::vector<std::uint8_t> random_weights(DType f, std::uint32_t code, index_t rows, index_t cols, std::uint64_t seed) {
  std::mt19937 rng{std::uint32_t(seed)};
  std::normal_distribution<float> normal;
  std::vector<float> x(std::size_t(rows * cols));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = normal(rng) * (i % 3 == 0 ? 0.02f : 0.5f);
  std::vector<std::uint8_t> out(std::size_t(rows * bytes_of(f, cols)));
  quant::quantize(code, name(f), x.data(), index_t(x.size()), out.data());
  return out;
}

}  // namespace

TEST_CASE("q8 dot: the CPU kernels of every ISA as the reference") {
  const Activations cases_x = activations();
  const std::vector<std::uint32_t> codes = {2, 3, 6, 7, 8, 10, 11, 12, 13, 14};
  for (std::size_t t = 0; t < weight_types.size(); ++t) {
    const auto& [type_name, f] = weight_types[t];
    CAPTURE(std::string(type_name));
    // The llama.cpp cases (K = 512: whole groups of 16 legacy blocks), then
    // K = 576 (a legacy row's last two blocks past the groups), 672 (an odd
    // number of four-block steps and one block past them) and 768, with
    // 1 … 6 activation rows (every tile height and a remainder).
    struct Case {
      index_t K, rows;
      std::vector<float> x;
      std::vector<std::uint8_t> w;
    };
    std::vector<Case> all;
    all.push_back(
        {512, cases_x.rows, cases_x.x, cases().tensor(std::string(type_name) + ".weights").to_vector<std::uint8_t>()});
    std::mt19937 rng{std::uint32_t(40 + t)};
    std::normal_distribution<float> normal;
    for (index_t K : {index_t(576), index_t(672), index_t(768)}) {
      if (K % block_size(f) != 0) continue;
      for (index_t rows : {1, 2, 3, 5, 6}) {
        Case c{K, rows, std::vector<float>(std::size_t(rows * K)), random_weights(f, codes[t], 7, K, 60 + t)};
        for (float& v : c.x) v = normal(rng) * 2.0f;
        all.push_back(std::move(c));
      }
    }
    for (const Case& c : all) {
      CAPTURE(c.K);
      CAPTURE(c.rows);
      const index_t W = index_t(c.w.size()) / bytes_of(f, c.K);
      quant::Q8Rows q;
      quant::quantize_activations(c.x.data(), c.K, c.rows, c.K, quant::activation_blocks(f), q);
      const WeightMatrix w{c.w.data(), f, W, c.K};
      std::vector<float> dequantised(std::size_t(W * c.K));
      widen_to_float(c.w.data(), f, 0, W * c.K, dequantised.data());
      for_each(
          [&](auto isa_tag) {
            using I = decltype(isa_tag);
            CAPTURE(I::name);
            std::vector<float> out(std::size_t(c.rows * W), -1.0f);
            // Rows [1, W) of W from activation row 1 on, then row 0 and activation row 0: offsets both ways.
            const index_t m0 = c.rows > 1 ? 1 : 0;
            backend::cpu::q8_gemm_nt<I>({q, m0}, c.rows - m0, w, 1, W - 1, out.data() + m0 * W + 1, W);
            backend::cpu::q8_gemm_nt<I>({q, 0}, c.rows, w, 0, 1, out.data(), W);
            if (m0 == 1) backend::cpu::q8_gemm_nt<I>({q, 0}, 1, w, 1, W - 1, out.data() + 1, W);
            index_t bad = 0;
            for (index_t i = 0; i < c.rows; ++i)
              for (index_t r = 0; r < W; ++r) {
                const float ours = out[std::size_t(i * W + r)];
                const float ref = quant::q8_dot(f, c.w.data() + r * bytes_of(f, c.K), q, i);
                if (!std::isfinite(ref)) {
                  if (std::isfinite(ours)) ++bad;
                  continue;
                }
                double magnitude = 0;
                for (index_t k = 0; k < c.K; ++k)
                  magnitude += std::fabs(double(dequantised[std::size_t(r * c.K + k)]) * c.x[std::size_t(i * c.K + k)]);
                if (!(std::fabs(double(ours) - ref) <= 1e-5 * magnitude + 1e-30)) {
                  if (bad == 0) MESSAGE("first: activation row ", i, " weight row ", r, ": ", ours, " vs ", ref);
                  ++bad;
                }
              }
            CHECK(bad == 0);
          },
          isa::Carried{});
    }
  }
}

TEST_CASE("q8 dot: the panel kernel (prefill) as the reference") {
  const std::vector<std::uint32_t> codes = {2, 3, 6, 7, 8, 10, 11, 12, 13, 14};
  for (std::size_t t = 0; t < weight_types.size(); ++t) {
    const auto& [type_name, f] = weight_types[t];
    CAPTURE(std::string(type_name));
    for (const index_t K : {index_t(256), index_t(512), index_t(576), index_t(768)}) {
      if (K % block_size(f) != 0) continue;
      CAPTURE(K);
      // 45 weight rows: two whole panels of 16, then 13 (a partial panel);
      // activation rows from the third on (a tile that starts inside the rows).
      const index_t W = 45, rows = 9, first = 2;
      const std::vector<std::uint8_t> w = random_weights(f, codes[t], W, K, 80 + t);
      std::mt19937 rng{std::uint32_t(90 + t)};
      std::normal_distribution<float> normal;
      std::vector<float> x(static_cast<std::size_t>(rows * K));
      for (float& v : x) v = normal(rng) * 3.0f;
      quant::Q8Rows q;
      quant::quantize_activations(x.data(), K, rows, K, quant::activation_blocks(f), q);
      const WeightMatrix m{w.data(), f, W, K};
      std::vector<float> dequantised(static_cast<std::size_t>(W * K));
      widen_to_float(w.data(), f, 0, W * K, dequantised.data());
      for_each(
          [&](auto isa_tag) {
            using I = decltype(isa_tag);
            if constexpr (backend::cpu::has_q8_panels<I>) {
              CAPTURE(I::name);
              if (!backend::cpu::q8_panels_take<I>(m)) return;
              std::vector<float> out(static_cast<std::size_t>(rows * W), -1.0f);
              std::vector<std::uint8_t> bytes;
              std::vector<float> floats;
              // Outputs [3, 45) then [0, 3): a first row that is no panel's.
              const backend::cpu::Q8Tile a(q, first);
              backend::cpu::q8_panel_gemm<I>(a, rows - first, m, 3, W - 3, out.data() + first * W + 3, W, bytes,
                                             floats);
              backend::cpu::q8_panel_gemm<I>(a, rows - first, m, 0, 3, out.data() + first * W, W, bytes, floats);
              index_t bad = 0;
              for (index_t i = first; i < rows; ++i)
                for (index_t r = 0; r < W; ++r) {
                  const float ours = out[std::size_t(i * W + r)];
                  const float ref = quant::q8_dot(f, w.data() + r * bytes_of(f, K), q, i);
                  double magnitude = 0;
                  for (index_t k = 0; k < K; ++k)
                    magnitude += std::fabs(double(dequantised[std::size_t(r * K + k)]) * x[std::size_t(i * K + k)]);
                  if (!(std::fabs(double(ours) - ref) <= 1e-5 * magnitude + 1e-30)) {
                    if (bad == 0) MESSAGE("first: activation row ", i, " weight row ", r, ": ", ours, " vs ", ref);
                    ++bad;
                  }
                }
              CHECK(bad == 0);
            }
          },
          isa::Carried{});
    }
  }
}
