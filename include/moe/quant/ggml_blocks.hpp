#pragma once
/// \file ggml_blocks.hpp
/// The block formats of ggml's quantised types (what GGUF files store) and
/// their reference dequantisation, written to be read: one function per
/// type, each block's fields named as ggml names them.
///
/// A quantised row is a run of blocks; each block holds `block` values
/// (32 for the legacy types Q4_0 … Q8_0, 256 for the k-quants) as small
/// integers and one or more fp16 scales. The k-quants nest: a super-block
/// of 256 values in sub-blocks of 16 or 32, each sub-block with a 4- or
/// 6-bit scale (and min) relative to the super-block's fp16 d (and dmin).
///
/// The arithmetic is the `gguf` package's (gguf.quants, llama.cpp's own
/// Python reference) operation for operation, in fp32 with each product
/// rounded before it is added: the same bits. ggml's C code computes the
/// same formulas, but its compilers may fuse a multiply and an add (one
/// rounding instead of two), so it can differ from both in the last bit.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe::quant {

/// fp16 (IEEE binary16) bits to fp32: exact (every half is a float).
inline float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu, bits;
  if (exponent == 0x1F) {  // inf, NaN
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // ±0
    bits = sign;
  } else {  // subnormal half: normalise (value = mantissa · 2^-24)
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace detail {

/// x, with the optimiser barred from fusing the product that made it into a
/// following add (so a·b − c rounds a·b first, as numpy does).
inline float rounded(float x) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __asm__("" : "+x"(x));
#elif defined(__aarch64__)
  __asm__("" : "+w"(x));
#elif defined(__GNUC__)
  __asm__("" : "+g"(x));
#endif
  return x;
}

inline float half_at(const unsigned char* p) noexcept {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

/// Sub-block j's 6-bit scale and min of a Q4_K / Q5_K super-block, from
/// the 12 bytes that pack 8 of each (ggml's get_scale_min_k4).
inline void scale_min_k4(int j, const unsigned char* q, int& scale, int& min) noexcept {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace detail

/// Q4_0, 32 values in 18 bytes: fp16 d, 16 bytes of 4-bit q (value j in the
/// low nibble of byte j, value j + 16 in its high nibble); x = d · (q − 8).
inline void dequantize_q4_0(const unsigned char* b, float* y) noexcept {
  const float d = detail::half_at(b);
  const unsigned char* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float((qs[j] & 0xF) - 8);
    y[j + 16] = d * float((qs[j] >> 4) - 8);
  }
}

/// Q4_1, 32 values in 20 bytes: fp16 d, fp16 m, nibbles as Q4_0; x = d·q + m.
inline void dequantize_q4_1(const unsigned char* b, float* y) noexcept {
  const float d = detail::half_at(b), m = detail::half_at(b + 2);
  const unsigned char* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = detail::rounded(d * float(qs[j] & 0xF)) + m;
    y[j + 16] = detail::rounded(d * float(qs[j] >> 4)) + m;
  }
}

/// The fifth bits of a Q5 block: bit j of the little-endian u32 qh is value j's.
inline std::uint32_t q5_high_bits(const unsigned char* qh) noexcept {
  return std::uint32_t(qh[0]) | std::uint32_t(qh[1]) << 8 | std::uint32_t(qh[2]) << 16 | std::uint32_t(qh[3]) << 24;
}

/// Q5_0, 32 values in 22 bytes: fp16 d, 4 bytes of fifth bits, nibbles as
/// Q4_0; x = d · (q − 16) with q = nibble | fifth bit << 4.
inline void dequantize_q5_0(const unsigned char* b, float* y) noexcept {
  const float d = detail::half_at(b);
  const std::uint32_t qh = q5_high_bits(b + 2);
  const unsigned char* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = int((qs[j] & 0xF) | ((qh >> j) & 1) << 4), hi = int((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    y[j] = d * float(lo - 16);
    y[j + 16] = d * float(hi - 16);
  }
}

/// Q5_1, 32 values in 24 bytes: fp16 d, fp16 m, fifth bits, nibbles; x = d·q + m.
inline void dequantize_q5_1(const unsigned char* b, float* y) noexcept {
  const float d = detail::half_at(b), m = detail::half_at(b + 2);
  const std::uint32_t qh = q5_high_bits(b + 4);
  const unsigned char* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const unsigned lo = (qs[j] & 0xFu) | ((qh >> j) & 1u) << 4, hi = (qs[j] >> 4) | ((qh >> (j + 16)) & 1u) << 4;
    y[j] = detail::rounded(d * float(lo)) + m;
    y[j + 16] = detail::rounded(d * float(hi)) + m;
  }
}

/// Q8_0, 32 values in 34 bytes: fp16 d, 32 int8 q; x = d · q.
inline void dequantize_q8_0(const unsigned char* b, float* y) noexcept {
  const float d = detail::half_at(b);
  for (int j = 0; j < 32; ++j) y[j] = float(std::int8_t(b[2 + j])) * d;
}

/// Q2_K, 256 values in 84 bytes: 16 bytes of sub-block scales (low nibble
/// scale, high nibble min, one per 16 values), 64 bytes of 2-bit q, fp16 d,
/// fp16 dmin. Value 128h + 32s + l is bits 2s… of byte 32h + l;
/// x = (d · scale) · q − dmin · min.
inline void dequantize_q2_k(const unsigned char* b, float* y) noexcept {
  const unsigned char *scales = b, *qs = b + 16;
  const float d = detail::half_at(b + 80), dmin = detail::half_at(b + 82);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32, g = e / 16;
    const float dl = d * float(scales[g] & 0xF), ml = dmin * float(scales[g] >> 4);
    y[e] = detail::rounded(dl * float((qs[32 * h + l] >> (2 * s)) & 3)) - ml;
  }
}

/// Q3_K, 256 values in 110 bytes: 32 bytes of third-bit masks, 64 bytes of
/// 2-bit q, 12 bytes packing 16 signed 6-bit scales, fp16 d. Value e has
/// its low bits as Q2_K's, its mask bit at byte e % 32, bit e / 32, and
/// x = (d · (scale − 32)) · (q − 4 · (1 − mask bit)).
inline void dequantize_q3_k(const unsigned char* b, float* y) noexcept {
  const unsigned char *hmask = b, *qs = b + 32, *sc = b + 96;
  const float d = detail::half_at(b + 108);
  int scale[16];
  for (int i = 0; i < 16; ++i) {
    const int low = (sc[i % 8] >> (4 * (i / 8))) & 0xF, high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    scale[i] = (low | high << 4) - 32;
  }
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    const int low = (qs[32 * h + l] >> (2 * s)) & 3, mask = (hmask[l] >> (e / 32)) & 1;
    y[e] = (d * float(scale[e / 16])) * float(low - ((mask ^ 1) << 2));
  }
}

/// Q4_K, 256 values in 144 bytes: fp16 d, fp16 dmin, 12 bytes packing 8
/// 6-bit scales and mins (one each per 32 values), 128 bytes of nibbles.
/// Value 64c + 32s + l is nibble s of byte 32c + l;
/// x = (d · scale) · q − dmin · min.
inline void dequantize_q4_k(const unsigned char* b, float* y) noexcept {
  const float d = detail::half_at(b), dmin = detail::half_at(b + 2);
  const unsigned char *scales = b + 4, *qs = b + 16;
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, s = (e % 64) / 32, l = e % 32;
    int scale, min;
    detail::scale_min_k4(e / 32, scales, scale, min);
    const int q = (qs[32 * c + l] >> (4 * s)) & 0xF;
    y[e] = detail::rounded((d * float(scale)) * float(q)) - dmin * float(min);
  }
}

/// Q5_K, 256 values in 176 bytes: Q4_K's fields and 32 bytes of fifth bits
/// before the nibbles; value e's fifth bit is bit e / 32 of byte e % 32.
inline void dequantize_q5_k(const unsigned char* b, float* y) noexcept {
  const float d = detail::half_at(b), dmin = detail::half_at(b + 2);
  const unsigned char *scales = b + 4, *qh = b + 16, *qs = b + 48;
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, s = (e % 64) / 32, l = e % 32;
    int scale, min;
    detail::scale_min_k4(e / 32, scales, scale, min);
    const int q = ((qs[32 * c + l] >> (4 * s)) & 0xF) | ((qh[l] >> (e / 32)) & 1) << 4;
    y[e] = detail::rounded((d * float(scale)) * float(q)) - dmin * float(min);
  }
}

/// Q6_K, 256 values in 210 bytes: 128 bytes of low nibbles (ql), 64 of
/// high 2-bit pairs (qh), 16 int8 scales (one per 16 values), fp16 d.
/// Value 128h + r: nibble r / 64 of ql[64h + r % 64], pair r / 32 of
/// qh[32h + r % 32]; x = (d · scale) · (q − 32).
inline void dequantize_q6_k(const unsigned char* b, float* y) noexcept {
  const unsigned char *ql = b, *qh = b + 128;
  const auto* scales = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = detail::half_at(b + 208);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, r = e % 128;
    const int low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF, high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
    y[e] = (d * float(scales[e / 16])) * float((low | high << 4) - 32);
  }
}

// ---------------------------------------------------------------------------
// Quantisation, fp32 to blocks, as the gguf package quantises (which for
// Q8_0 is ggml-quants.c's reference quantiser bit for bit): the scale from
// the block's extremes in fp32, stored as fp16 rounded to nearest even,
// each value scaled by the fp32 inverse and rounded (Q8_0: half away from
// zero) or shifted and truncated (Q4/Q5: trunc(x / d + offset), clamped).
// ---------------------------------------------------------------------------

/// fp32 to fp16 bits, rounded to nearest even (overflow to ±inf), as numpy's astype(float16).
inline std::uint16_t float_to_half(float f) noexcept { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(f)); }

namespace detail {

inline void put_half(unsigned char* p, float f) noexcept {
  const std::uint16_t h = float_to_half(f);
  std::memcpy(p, &h, 2);
}

/// The value of largest magnitude, signed (the first of equals), for the symmetric 4- and 5-bit types.
inline float signed_max(const float* x, int n) noexcept {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

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
  return type == 0 || type == 1 || type == 30 || type == 2 || type == 3 || type == 6 || type == 7 || type == 8;
}

/// n fp32 values (a multiple of the type's block) into `dst` as ggml type `type`.
inline void quantize(std::uint32_t type, std::string_view type_name, const float* src, index_t n, unsigned char* dst) {
  const auto blocks = [&](index_t bytes, void (*one)(const float*, unsigned char*)) {
    for (index_t k = 0; k < n / 32; ++k) one(src + k * 32, dst + k * bytes);
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
    default:
      throw Error(ErrorCode::unsupported,
                  moe::detail::cat("cannot quantise to ggml type ", type_name, " (", type,
                                   "): supported are F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0"));
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
