#pragma once
/// \file rope.hpp
/// Rotary position embedding (Su et al. 2021) in the layout of Hugging Face
/// Llama/Mistral/Mixtral checkpoints: a head of hd values is split in two
/// halves and element i is rotated together with element i + hd/2 (not with
/// its neighbour i + 1, as in the paper and in Meta's original code; HF
/// permutes q_proj/k_proj rows at conversion so that halves are pairs).
///
///   θ_i = theta^(-2i/hd),  a = position · θ_i,  for i in [0, hd/2)
///   out[i]        = u[i] · cos a − u[i + hd/2] · sin a
///   out[i + hd/2] = u[i + hd/2] · cos a + u[i] · sin a
///
/// A GGUF file stores q and k rows permuted so that the pairs are adjacent,
/// (2i, 2i + 1) (Meta's order, ggml's RoPE); rotating adjacent pairs of
/// those rows gives the same values as rotating halves of Hugging Face's, in
/// the permuted order, which attention's dot products do not see.
///
/// Angles are computed in double and rounded once: the exact maths, whose
/// error does not grow with the position (fp32 angles lose ~1e-3 rad by
/// position 30000).

#include <cmath>
#include <vector>

#include "moe/core/types.hpp"
#include "moe/models/mixtral/config.hpp"

namespace moe::mixtral {

/// cos and sin of every (position, frequency) a call needs: [S, hd/2] each.
struct RopeTable {
  index_t half = 0;  ///< hd / 2
  RopePairs pairs = RopePairs::halves;
  std::vector<float> cos, sin;

  RopeTable(double theta, index_t head_dim, index_t first_position, index_t count,
            RopePairs pairing = RopePairs::halves)
      : half(head_dim / 2), pairs(pairing) {
    cos.resize(std::size_t(count * half));
    sin.resize(std::size_t(count * half));
    for (index_t s = 0; s < count; ++s)
      for (index_t i = 0; i < half; ++i) {
        const double inv_freq = std::pow(theta, -2.0 * double(i) / double(head_dim));
        const double angle = double(first_position + s) * inv_freq;
        cos[std::size_t(s * half + i)] = float(std::cos(angle));
        sin[std::size_t(s * half + i)] = float(std::sin(angle));
      }
  }

  /// Rotates one head vector u[0, 2·half) of the s-th position in place.
  void rotate(float* u, index_t s) const noexcept {
    const float* c = cos.data() + s * half;
    const float* n = sin.data() + s * half;
    if (pairs == RopePairs::adjacent) {
      for (index_t i = 0; i < half; ++i) {
        const float a = u[2 * i], b = u[2 * i + 1];
        u[2 * i] = a * c[i] - b * n[i];
        u[2 * i + 1] = b * c[i] + a * n[i];
      }
      return;
    }
    for (index_t i = 0; i < half; ++i) {
      const float a = u[i], b = u[i + half];
      u[i] = a * c[i] - b * n[i];
      u[i + half] = b * c[i] + a * n[i];
    }
  }
};

}  // namespace moe::mixtral
