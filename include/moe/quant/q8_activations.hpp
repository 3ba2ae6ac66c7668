#pragma once
/// \file q8_activations.hpp
/// Integer dot products of block-quantised weights with activations that
/// are quantised per block too: the arithmetic of llama.cpp's CPU backend,
/// which quantises the fp32 input of every product with block weights (its
/// `vec_dot_type`) and multiplies small integers:
///
///   weights               activations   per block of activations
///   Q4_0, Q5_0, Q8_0      Q8_0          32 values: d = max|x| / 127 (kept as fp16),
///                                       q = x · (127 / max|x|) rounded to nearest even
///   Q4_1, Q5_1            Q8_1          Q8_0's q and d, and s = fp16(d · Σq) for the minimums
///   Q2_K … Q6_K           Q8_K          256 values: the value m of largest magnitude
///                                       maps to −127: q = min(127, round(x · −127/m)),
///                                       d = 1 / (−127/m) in fp32, Σq per 16 (bsums)
///
/// Every weight block is small integers q with integer sub-block scales
/// and minimums under fp16 factors (BlockIntegers below), so a block's dot
/// product is an exact integer sum times one float product:
///
///   legacy    (d_w · d_a) · Σ q_w q_a                    (+ m_w · s_a for Q4_1, Q5_1)
///   k-quants  (d_a · d_w) · Σ_g scale_g Σ_{g} q_w q_a  −  (d_a · dmin_w) · Σ_g min_g Σ_{g} q_a
///
/// This header is the reference, written to be read: the quantisers make
/// the same bytes as ggml's x86 CPU backend (tests/data/cases/gguf/q8_dot.safetensors,
/// from llama.cpp itself), and q8_dot sums the blocks in order. The SIMD
/// kernels (moe/backend/cpu/q8_dot.hpp) compute the same integers; only the
/// order in which the per-block floats are added differs.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/quant/block_formats.hpp"
#include "moe/quant/half.hpp"

namespace moe::quant {

/// Which activation blocks a weight format's dot product takes.
enum class ActivationBlocks { q8_0, q8_1, q8_k };

inline ActivationBlocks activation_blocks(DType weights) noexcept {
  switch (weights) {
    case DType::Q4_1:
    case DType::Q5_1:
      return ActivationBlocks::q8_1;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return ActivationBlocks::q8_k;
    default:
      return ActivationBlocks::q8_0;
  }
}

/// Values per activation block: 32 (Q8_0, Q8_1) or 256 (Q8_K).
inline constexpr index_t activation_block(ActivationBlocks b) noexcept {
  return b == ActivationBlocks::q8_k ? 256 : 32;
}

/// Rows of activations quantised per block, fields apart (the kernels read
/// each as a vector): `rows` rows of `cols` values.
struct Q8Rows {
  ActivationBlocks blocks = ActivationBlocks::q8_0;
  index_t rows = 0, cols = 0;
  std::vector<std::int8_t> q;      ///< rows · cols
  std::vector<float> d;            ///< a scale per block (fp16-rounded for Q8_0/Q8_1, as the dot reads it)
  std::vector<float> s;            ///< Q8_1: fp16(d · Σq) per block of 32, as a float
  std::vector<std::int16_t> sums;  ///< Σq per 16 values (Q8_K's bsums; kept for every kind)

  index_t blocks_per_row() const noexcept { return cols / activation_block(blocks); }
  const std::int8_t* row(index_t r) const noexcept { return q.data() + r * cols; }
};

namespace detail {

/// Round to nearest, ties to even, as vroundps with _MM_ROUND_NEAREST and
/// ggml's nearest_int (the magic-number add) both do.
inline int nearest_even(float v) noexcept { return static_cast<int>(std::nearbyint(v)); }

/// 32 values as ggml's x86 quantize_row_q8_0 / q8_1 make them: d = amax / 127
/// stored as fp16, the values scaled by 127 / amax (not 1 / d) and rounded.
inline void quantize_q8_32(const float* x, std::int8_t* q, float& d_half, float& s_half) noexcept {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = static_cast<std::int8_t>(nearest_even(x[j] * id));
    sum += q[j];
  }
  d_half = half_to_float(float_to_half(d));
  s_half = half_to_float(float_to_half(d * float(sum)));
}

/// 256 values as ggml's quantize_row_q8_K_ref: the largest magnitude's
/// signed value m maps to −127; d = 1 / (−127 / m) in fp32; all zero if m is.
inline void quantize_q8_256(const float* x, std::int8_t* q, float& d) noexcept {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 256; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  if (amax == 0.0f) {
    d = 0.0f;
    std::fill(q, q + 256, std::int8_t(0));
    return;
  }
  const float iscale = -127.0f / max;
  for (int j = 0; j < 256; ++j) q[j] = static_cast<std::int8_t>(std::min(127, nearest_even(iscale * x[j])));
  d = 1.0f / iscale;
}

}  // namespace detail

/// Sizes `out` for `rows` rows of `cols` values (its storage reused), cols
/// a multiple of the block; quantize_activation_row then fills each row
/// (rows are independent: a pool may fill them in parallel).
inline void shape_activations(Q8Rows& out, ActivationBlocks blocks, index_t rows, index_t cols) {
  const index_t block = activation_block(blocks);
  moe::detail::require(cols % block == 0, ErrorCode::shape_mismatch, "quantize_activations: ", cols,
                       " values per row are not whole blocks of ", block);
  out.blocks = blocks;
  out.rows = rows;
  out.cols = cols;
  out.q.resize(std::size_t(rows * cols));
  out.d.resize(std::size_t(rows * cols / block));
  out.s.resize(blocks == ActivationBlocks::q8_1 ? std::size_t(rows * cols / 32) : 0);
  out.sums.resize(std::size_t(rows * cols / 16));
}

/// Row r of `out` from the out.cols fp32 values at x.
inline void quantize_activation_row(const float* x, Q8Rows& out, index_t r) noexcept {
  const index_t block = activation_block(out.blocks), cols = out.cols;
  for (index_t b = 0; b < cols / block; ++b) {
    const index_t at = r * cols + b * block;
    std::int8_t* q = out.q.data() + at;
    float& d = out.d[std::size_t(at / block)];
    if (out.blocks == ActivationBlocks::q8_k) {
      detail::quantize_q8_256(x + b * block, q, d);
    } else {
      float s = 0.0f;
      detail::quantize_q8_32(x + b * block, q, d, s);
      if (out.blocks == ActivationBlocks::q8_1) out.s[std::size_t(at / 32)] = s;
    }
    for (index_t g = 0; g < block / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += q[g * 16 + j];
      out.sums[std::size_t(at / 16 + g)] = std::int16_t(sum);
    }
  }
}

/// Quantises `rows` rows of `cols` fp32 values (row i at x + i · ldx) into
/// `out` (resized; its storage reused), cols a multiple of the block.
inline void quantize_activations(const float* x, index_t ldx, index_t rows, index_t cols, ActivationBlocks blocks,
                                 Q8Rows& out) {
  shape_activations(out, blocks, rows, cols);
  for (index_t r = 0; r < rows; ++r) quantize_activation_row(x + r * ldx, out, r);
}

/// A weight block as integers: values q (signed), an integer scale (and
/// minimum) per group of `group` values, and the fp16 factors d, dmin (m:
/// Q4_1/Q5_1's minimum). Legacy blocks are one group of 32 with scale 1.
/// value = d · scale · q − dmin · min (legacy: d · q + m).
struct BlockIntegers {
  int values = 32, group = 32;
  std::int8_t q[256];
  int scale[16], min[16];
  float d = 0.0f, dmin = 0.0f, m = 0.0f;
  bool has_min = false;  ///< Q4_1, Q5_1 (m), Q2_K, Q4_K, Q5_K (per-group minimums)
};

/// A block's factors without its values: d, dmin, m and the integer scale
/// and minimum of each group (what a kernel that decodes the values in
/// vectors reads from the block one by one).
inline void block_scales(DType f, const unsigned char* b, BlockIntegers& out) noexcept {
  using detail::half_at;
  out.values = int(block_size(f));
  out.group = out.values == 256 && f != DType::Q4_K && f != DType::Q5_K ? 16 : 32;
  out.has_min = f == DType::Q4_1 || f == DType::Q5_1 || f == DType::Q2_K || f == DType::Q4_K || f == DType::Q5_K;
  std::fill(out.scale, out.scale + 16, 1);
  std::fill(out.min, out.min + 16, 0);
  out.d = out.dmin = out.m = 0.0f;
  switch (f) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q5_0:
      out.d = half_at(b);
      return;
    case DType::Q4_1:
    case DType::Q5_1:
      out.d = half_at(b);
      out.m = half_at(b + 2);
      return;
    case DType::Q2_K:
      out.d = half_at(b + 80);
      out.dmin = half_at(b + 82);
      for (int g = 0; g < 16; ++g) out.scale[g] = b[g] & 0xF, out.min[g] = b[g] >> 4;
      return;
    case DType::Q3_K: {
      out.d = half_at(b + 108);
      const unsigned char* sc = b + 96;
      for (int g = 0; g < 16; ++g)
        out.scale[g] = (((sc[g % 8] >> (4 * (g / 8))) & 0xF) | ((sc[8 + g % 4] >> (2 * (g / 4))) & 3) << 4) - 32;
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K:
      out.d = half_at(b);
      out.dmin = half_at(b + 2);
      for (int g = 0; g < 8; ++g) detail::scale_min_k4(g, b + 4, out.scale[g], out.min[g]);
      return;
    case DType::Q6_K:
      out.d = half_at(b + 208);
      for (int g = 0; g < 16; ++g) out.scale[g] = std::int8_t(b[192 + g]);
      return;
    default:
      return;
  }
}

/// The integers of one block of weight format `f` (any block-quantised DType).
inline void block_integers(DType f, const unsigned char* b, BlockIntegers& out) noexcept {
  block_scales(f, b, out);
  switch (f) {
    case DType::Q8_0:
      for (int j = 0; j < 32; ++j) out.q[j] = std::int8_t(b[2 + j]);
      return;
    case DType::Q4_0:
    case DType::Q4_1: {
      const int offset = f == DType::Q4_0 ? 8 : 0;
      const unsigned char* qs = b + (offset ? 2 : 4);
      for (int j = 0; j < 16; ++j) {
        out.q[j] = std::int8_t((qs[j] & 0xF) - offset);
        out.q[j + 16] = std::int8_t((qs[j] >> 4) - offset);
      }
      return;
    }
    case DType::Q5_0:
    case DType::Q5_1: {
      const int offset = f == DType::Q5_0 ? 16 : 0;
      const std::uint32_t qh = q5_high_bits(b + (offset ? 2 : 4));
      const unsigned char* qs = b + (offset ? 6 : 8);
      for (int j = 0; j < 16; ++j) {
        out.q[j] = std::int8_t(((qs[j] & 0xF) | ((qh >> j) & 1) << 4) - offset);
        out.q[j + 16] = std::int8_t(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - offset);
      }
      return;
    }
    case DType::Q2_K:
      for (int e = 0; e < 256; ++e)
        out.q[e] = std::int8_t((b[16 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
      return;
    case DType::Q3_K:
      for (int e = 0; e < 256; ++e) {
        const int low = (b[32 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        out.q[e] = std::int8_t(low - (((b[e % 32] >> (e / 32)) & 1) ^ 1) * 4);
      }
      return;
    case DType::Q4_K:
    case DType::Q5_K: {
      const bool fifth = f == DType::Q5_K;
      const unsigned char *qh = b + 16, *qs = b + (fifth ? 48 : 16);
      for (int e = 0; e < 256; ++e) {
        const int low = (qs[32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 0xF;
        out.q[e] = std::int8_t(low | (fifth ? ((qh[e % 32] >> (e / 32)) & 1) << 4 : 0));
      }
      return;
    }
    case DType::Q6_K: {
      const unsigned char *ql = b, *qh = b + 128;
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, r = e % 128;
        const int low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF,
                  high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        out.q[e] = std::int8_t((low | high << 4) - 32);
      }
      return;
    }
    default:
      return;
  }
}

/// Row `r` of the activations · one row of weights of format `f` (cols
/// values): each block's integer sum exact, its float terms added in block
/// order (legacy minimums last, as ggml adds them).
inline float q8_dot(DType f, const unsigned char* w, const Q8Rows& a, index_t r) noexcept {
  const index_t n = block_size(f), blocks = a.cols / n;
  const std::int8_t* x = a.row(r);
  BlockIntegers bi;
  float sum = 0.0f, mins = 0.0f;
  for (index_t b = 0; b < blocks; ++b) {
    block_integers(f, w + b * size_of(f), bi);
    const std::int8_t* xb = x + b * n;
    if (n == 32) {  // legacy: one Q8_0/Q8_1 block
      int dot = 0;
      for (int j = 0; j < 32; ++j) dot += bi.q[j] * xb[j];
      const index_t ab = r * a.cols / 32 + b;
      sum += (bi.d * a.d[std::size_t(ab)]) * float(dot);
      if (bi.has_min) mins += bi.m * a.s[std::size_t(ab)];
      continue;
    }
    int dot = 0, min_dot = 0;  // k-quant: one Q8_K block
    for (int g = 0; g < 256 / bi.group; ++g) {
      int group_dot = 0, group_sum = 0;
      for (int j = g * bi.group; j < (g + 1) * bi.group; ++j) group_dot += bi.q[j] * xb[j];
      for (int h = g * bi.group / 16; h < (g + 1) * bi.group / 16; ++h)
        group_sum += a.sums[std::size_t((r * a.cols + b * 256) / 16 + h)];
      dot += bi.scale[g] * group_dot;
      min_dot += bi.min[g] * group_sum;
    }
    const float da = a.d[std::size_t(r * a.cols / 256 + b)];
    sum += (da * bi.d) * float(dot);
    if (bi.has_min) sum -= (da * bi.dmin) * float(min_dot);
  }
  return sum + mins;
}

}  // namespace moe::quant
