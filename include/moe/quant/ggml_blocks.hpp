#pragma once
/// \file ggml_blocks.hpp
/// ggml's quantised types by their GGUF codes: quantisation of fp32 into
/// blocks, as the gguf package quantises, and dequantisation of a run of
/// values of any code (the block formats themselves: block_formats.hpp).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/quant/block_formats.hpp"
#include "moe/quant/half.hpp"
#include "moe/quant/k_quants.hpp"

namespace moe::quant {

// ---------------------------------------------------------------------------
// Quantisation, fp32 to blocks, as the gguf package quantises (which for
// Q8_0 is ggml-quants.c's reference quantiser bit for bit): the scale from
// the block's extremes in fp32, stored as fp16 rounded to nearest even,
// each value scaled by the fp32 inverse and rounded (Q8_0: half away from
// zero) or shifted and truncated (Q4/Q5: trunc(x / d + offset), clamped).
// ---------------------------------------------------------------------------

namespace detail {

/// trunc(v) as a small unsigned integer clamped to [0, top] (numpy: trunc, astype(uint8), clip).
inline int truncated(float v, int top) noexcept {
  const int q = v > 0 ? int(v) : 0;
  return q < top ? q : top;
}

}  // namespace detail

/// 32 values to a Q8_0 block: d = max|x| / 127, q = round(x / d).
inline void quantize_q8_0(const float* x, unsigned char* b) noexcept {
  float amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d == 0.0f ? 0.0f : 1.0f / d;
  detail::put_half(b, d);
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<unsigned char>(std::int8_t(std::round(x[j] * id)));
}

/// 32 values to a Q4_0 block: d = (signed max) / −8, q = trunc(x / d + 8.5) in [0, 15].
inline void quantize_q4_0(const float* x, unsigned char* b) noexcept {
  const float d = detail::signed_max(x, 32) / -8.0f, id = d == 0.0f ? 0.0f : 1.0f / d;
  detail::put_half(b, d);
  for (int j = 0; j < 16; ++j) {
    const int lo = detail::truncated(detail::rounded(x[j] * id) + 8.5f, 15);
    const int hi = detail::truncated(detail::rounded(x[j + 16] * id) + 8.5f, 15);
    b[2 + j] = static_cast<unsigned char>(lo | hi << 4);
  }
}

/// 32 values to a Q4_1 block: d = (max − min) / 15, m = min, q = trunc((x − m) / d + 0.5).
inline void quantize_q4_1(const float* x, unsigned char* b) noexcept {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 15.0f, id = d == 0.0f ? 0.0f : 1.0f / d;
  detail::put_half(b, d);
  detail::put_half(b + 2, min);
  for (int j = 0; j < 16; ++j) {
    const int lo = detail::truncated(detail::rounded((x[j] - min) * id) + 0.5f, 15);
    const int hi = detail::truncated(detail::rounded((x[j + 16] - min) * id) + 0.5f, 15);
    b[4 + j] = static_cast<unsigned char>(lo | hi << 4);
  }
}

/// The 32 five-bit values q of a Q5 block into its fifth bits and nibbles.
inline void pack_q5(const int* q, unsigned char* qh, unsigned char* qs) noexcept {
  std::uint32_t high = 0;
  for (int j = 0; j < 32; ++j) high |= std::uint32_t(q[j] >> 4) << j;
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<unsigned char>(high >> (8 * k));
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<unsigned char>((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
}

/// 32 values to a Q5_0 block: d = (signed max) / −16, q = trunc(x / d + 16.5) in [0, 31].
inline void quantize_q5_0(const float* x, unsigned char* b) noexcept {
  const float d = detail::signed_max(x, 32) / -16.0f, id = d == 0.0f ? 0.0f : 1.0f / d;
  detail::put_half(b, d);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = detail::truncated(detail::rounded(x[j] * id) + 16.5f, 31);
  pack_q5(q, b + 2, b + 6);
}

/// 32 values to a Q5_1 block: d = (max − min) / 31, m = min, q = trunc((x − m) / d + 0.5).
inline void quantize_q5_1(const float* x, unsigned char* b) noexcept {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 31.0f, id = d == 0.0f ? 0.0f : 1.0f / d;
  detail::put_half(b, d);
  detail::put_half(b + 2, min);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = detail::truncated(detail::rounded((x[j] - min) * id) + 0.5f, 31);
  pack_q5(q, b + 4, b + 8);
}

/// Whether quantize() writes this type (GGUF code).
inline bool can_quantize(std::uint32_t type) noexcept {
  return type == 0 || type == 1 || type == 30 || type == 2 || type == 3 || type == 6 || type == 7 || type == 8 ||
         (type >= 10 && type <= 14);
}

/// n fp32 values (a multiple of the type's block) into `dst` as ggml type `type`.
inline void quantize(std::uint32_t type, std::string_view type_name, const float* src, index_t n, unsigned char* dst) {
  const auto blocks = [&](index_t bytes, void (*one)(const float*, unsigned char*), index_t values = 32) {
    for (index_t k = 0; k < n / values; ++k) one(src + k * values, dst + k * bytes);
  };
  switch (type) {
    case 0:
      if (n > 0) std::memcpy(dst, src, std::size_t(n) * 4);
      return;
    case 1:
      for (index_t k = 0; k < n; ++k) detail::put_half(dst + 2 * k, src[k]);
      return;
    case 30:
      for (index_t k = 0; k < n; ++k) {
        const std::uint16_t h = bf16_bits(src[k]);
        std::memcpy(dst + 2 * k, &h, 2);
      }
      return;
    case 2:
      return blocks(18, quantize_q4_0);
    case 3:
      return blocks(20, quantize_q4_1);
    case 6:
      return blocks(22, quantize_q5_0);
    case 7:
      return blocks(24, quantize_q5_1);
    case 8:
      return blocks(34, quantize_q8_0);
    case 10:
      return blocks(84, quantize_q2_k, 256);
    case 11:
      return blocks(110, quantize_q3_k, 256);
    case 12:
      return blocks(144, quantize_q4_k, 256);
    case 13:
      return blocks(176, quantize_q5_k, 256);
    case 14:
      return blocks(210, quantize_q6_k, 256);
    default:
      throw Error(ErrorCode::unsupported,
                  moe::detail::cat("cannot quantise to ggml type ", type_name, " (", type,
                                   "): supported are F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K"));
  }
}

/// The ggml types dequantize() handles, by their GGUF code.
inline bool can_dequantize(std::uint32_t type) noexcept {
  switch (type) {
    case 0:   // F32
    case 1:   // F16
    case 30:  // BF16
    case 2:   // Q4_0
    case 3:   // Q4_1
    case 6:   // Q5_0
    case 7:   // Q5_1
    case 8:   // Q8_0
    case 10:  // Q2_K
    case 11:  // Q3_K
    case 12:  // Q4_K
    case 13:  // Q5_K
    case 14:  // Q6_K
      return true;
    default:
      return false;
  }
}

/// n values of ggml type `type` (its GGUF code) from `src` into `dst`; n a
/// multiple of the type's block. An Error names a type it does not handle.
inline void dequantize(std::uint32_t type, std::string_view type_name, const unsigned char* src, index_t n,
                       float* dst) {
  const auto blocks = [&](index_t block, index_t bytes, void (*one)(const unsigned char*, float*)) {
    for (index_t k = 0; k < n / block; ++k) one(src + k * bytes, dst + k * block);
  };
  switch (type) {
    case 0:
      if (n > 0) std::memcpy(dst, src, std::size_t(n) * 4);
      return;
    case 1:
      for (index_t k = 0; k < n; ++k) dst[k] = detail::half_at(src + 2 * k);
      return;
    case 30:
      for (index_t k = 0; k < n; ++k) {
        const std::uint32_t bits = std::uint32_t(src[2 * k]) << 16 | std::uint32_t(src[2 * k + 1]) << 24;
        std::memcpy(dst + k, &bits, 4);
      }
      return;
    case 2:
      return blocks(32, 18, dequantize_q4_0);
    case 3:
      return blocks(32, 20, dequantize_q4_1);
    case 6:
      return blocks(32, 22, dequantize_q5_0);
    case 7:
      return blocks(32, 24, dequantize_q5_1);
    case 8:
      return blocks(32, 34, dequantize_q8_0);
    case 10:
      return blocks(256, 84, dequantize_q2_k);
    case 11:
      return blocks(256, 110, dequantize_q3_k);
    case 12:
      return blocks(256, 144, dequantize_q4_k);
    case 13:
      return blocks(256, 176, dequantize_q5_k);
    case 14:
      return blocks(256, 210, dequantize_q6_k);
    default:
      throw Error(ErrorCode::unsupported,
                  moe::detail::cat("cannot dequantise ggml type ", type_name, " (", type,
                                   "): supported are F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K"));
  }
}

}  // namespace moe::quant
