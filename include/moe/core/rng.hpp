#pragma once
/// \file rng.hpp
/// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
///
/// Why counter-based: a draw is a pure function of (seed, step, token,
/// column, stream), so it does not matter which thread computes it or in
/// what order. The same seed gives the same noise on one thread, on many, and
/// (later) on a GPU. There is no generator state to share or to advance.

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

namespace moe {

/// Independent streams, one per purpose, so that e.g. jitter and the GShard
/// second-expert draw never reuse each other's numbers.
enum class RngStream : std::uint32_t {
  jitter = 1,
  noisy_top_k = 2,
  gshard_second = 3,
  init = 4,            ///< weight initialisation helpers
  sampling = 5,        ///< next-token sampling in generation
  expert_dropout = 6,  ///< dropout masks inside the experts (training)
  merge = 7,           ///< frankenMoE router rows (random, uniform_random)
  merge_noise = 8,     ///< frankenMoE noise_scale on expert weights
  user = 0x100,        ///< first stream free for user code
};

/// Identifies one forward call: the layer's seed and the training step.
struct RngKey {
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
};

namespace detail {

inline std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> ctr,
                                                  std::array<std::uint32_t, 2> key) noexcept {
  constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t(M0) * ctr[0];
    const std::uint64_t p1 = std::uint64_t(M1) * ctr[2];
    ctr = {std::uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], std::uint32_t(p1), std::uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           std::uint32_t(p0)};
    key[0] += W0;
    key[1] += W1;
  }
  return ctr;
}

}  // namespace detail

/// Four random 32-bit words for (key, stream, row, column).
/// The step's upper bits go into the stream word, so steps never collide.
inline std::array<std::uint32_t, 4> random_bits(RngKey key, RngStream stream, std::uint64_t row,
                                                std::uint64_t column) noexcept {
  const std::array<std::uint32_t, 4> ctr = {
      std::uint32_t(row), std::uint32_t(column) ^ std::uint32_t(row >> 32) * 0x85EBCA6Bu, std::uint32_t(key.step),
      std::uint32_t(stream) ^ (std::uint32_t(key.step >> 32) << 12)};
  return detail::philox4x32_10(ctr, {std::uint32_t(key.seed), std::uint32_t(key.seed >> 32)});
}

/// Uniform float in [0, 1) with 24 random bits (every value exactly representable).
inline float bits_to_unit(std::uint32_t bits) noexcept { return float(bits >> 8) * 0x1p-24f; }

/// One U[0, 1) draw for (row, column) of a stream.
inline float uniform(RngKey key, RngStream stream, std::uint64_t row, std::uint64_t column) noexcept {
  return bits_to_unit(random_bits(key, stream, row, column)[0]);
}

/// One N(0, 1) draw (Box-Muller on two words of the same counter).
inline float normal(RngKey key, RngStream stream, std::uint64_t row, std::uint64_t column) noexcept {
  const auto b = random_bits(key, stream, row, column);
  const double u1 = (double(b[0] >> 8) + 1.0) * 0x1p-24;  // (0, 1]: log is finite
  const double u2 = double(b[1] >> 8) * 0x1p-24;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
}

}  // namespace moe
