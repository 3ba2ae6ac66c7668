#pragma once
// Block-quantised weights for tests: random blocks of ggml's formats (random
// bits, fp16 scales of a weight's size) and a Mixtral layer built on them,
// beside the same layer on their dequantised values as fp32.
#include <moe/layer/weight_store.hpp>
#include <moe/moe.hpp>
#include <moe/quant/ggml_blocks.hpp>

#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <vector>

namespace moe::test {

inline constexpr DType block_types[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                                        DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

/// Byte offsets of a block's fp16 scale fields (d, and dmin or m).
inline std::vector<int> half_fields(DType d) {
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
inline std::vector<unsigned char> random_blocks(DType d, index_t rows, index_t cols, std::uint64_t seed) {
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

inline std::vector<float> dequantised(DType d, const std::vector<unsigned char>& blocks, index_t n) {
  std::vector<float> v(std::size_t(n), 0.0f);
  widen_to_float(blocks.data(), d, 0, n, v.data());
  return v;
}

/// A Mixtral layer whose experts hold block-quantised weights, and the
/// same layer on their dequantised values as fp32.
struct BlockLayer {
  LayerConfig config{.d_model = 256, .d_ff = 256, .num_experts = 4, .seed = 3};
  std::vector<std::vector<unsigned char>> blocks;
  std::vector<std::vector<float>> values;
  Matrix router = random_normal_matrix(4, 256, 11, 0.1f);
  LayerWeights quantised, widened;

  BlockLayer(const BlockLayer&) = delete;  // the weights are views of the vectors
  BlockLayer& operator=(const BlockLayer&) = delete;
  /// Gate and up in `d`, down in `down` (GGUF's mixes: Q4_K beside Q6_K).
  explicit BlockLayer(DType d, index_t d_model = 256, index_t d_ff = 256, std::optional<DType> down = {}) {
    config.d_model = d_model;
    config.d_ff = d_ff;
    router = random_normal_matrix(4, d_model, 11, 0.1f);
    quantised.router.gate = widened.router.gate = weight_view(router.data(), 4, d_model);
    std::uint64_t seed = 100;
    const auto matrix = [&](index_t rows, index_t cols, WeightMatrix& q, WeightMatrix& f, DType d) {
      blocks.push_back(random_blocks(d, rows, cols, seed++));
      values.push_back(dequantised(d, blocks.back(), rows * cols));
      q = {blocks.back().data(), d, rows, cols};
      f = weight_view(values.back().data(), rows, cols);
    };
    blocks.reserve(12);
    values.reserve(12);
    for (index_t e = 0; e < config.num_experts; ++e) {
      ExpertWeights q, f;
      matrix(config.d_ff, config.d_model, q.gate, f.gate, d);
      matrix(config.d_ff, config.d_model, q.up, f.up, d);
      matrix(config.d_model, config.d_ff, q.down, f.down, down.value_or(d));
      quantised.experts.push_back(q);
      widened.experts.push_back(f);
    }
  }
};

}  // namespace moe::test
