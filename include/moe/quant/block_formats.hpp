#pragma once
/// \file block_formats.hpp
/// The block formats of ggml's quantised types (what GGUF files store) and
/// their reference dequantisation, written to be read: one function per
/// type, each block's fields named as ggml names them. moe::DType names
/// these formats (Q4_0 … Q6_K), so a weight can stay in its stored blocks.
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
///
/// No moe headers: moe/core/types.hpp includes this one.

#include <cstdint>
#include <cstring>

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

}  // namespace moe::quant
