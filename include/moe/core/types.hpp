#pragma once
/// \file types.hpp
/// Scalar vocabulary: index type, forward mode, element types of weights.

#include <Eigen/Core>  // Eigen::bfloat16, Eigen::half

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "moe/core/error.hpp"
#include "moe/quant/block_formats.hpp"

namespace moe {

/// Signed index for sizes and offsets (signed so that differences are safe).
using index_t = std::int64_t;

/// Training mode enables noise, jitter and the training capacity factor;
/// inference (eval) is deterministic and noise-free.
enum class Mode { eval, train };

/// Element types a tensor can hold: the safetensors codes we read, and
/// ggml's block-quantised formats (GGUF weights, kept in their stored
/// blocks: moe/quant/block_formats.hpp), whose elements come in blocks of
/// 32 or 256 values that share fp16 scales.
enum class DType {
  F64,
  F32,
  F16,
  BF16,
  I64,
  I32,
  I16,
  I8,
  U8,
  BOOL,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K
};

inline constexpr std::string_view name(DType d) noexcept {
  switch (d) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
    case DType::Q4_0:
      return "Q4_0";
    case DType::Q4_1:
      return "Q4_1";
    case DType::Q5_0:
      return "Q5_0";
    case DType::Q5_1:
      return "Q5_1";
    case DType::Q8_0:
      return "Q8_0";
    case DType::Q2_K:
      return "Q2_K";
    case DType::Q3_K:
      return "Q3_K";
    case DType::Q4_K:
      return "Q4_K";
    case DType::Q5_K:
      return "Q5_K";
    case DType::Q6_K:
      return "Q6_K";
  }
  return "?";
}

/// Values per block: 1 for the element types, 32 or 256 for ggml's blocks.
inline constexpr index_t block_size(DType d) noexcept {
  switch (d) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0:
      return 32;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return 256;
    default:
      return 1;
  }
}
inline constexpr bool is_block_quantised(DType d) noexcept { return block_size(d) > 1; }

/// Bytes of one element, or of one block of a block-quantised dtype.
inline constexpr index_t size_of(DType d) noexcept {
  switch (d) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
    case DType::Q4_0:
      return 18;
    case DType::Q4_1:
      return 20;
    case DType::Q5_0:
      return 22;
    case DType::Q5_1:
      return 24;
    case DType::Q8_0:
      return 34;
    case DType::Q2_K:
      return 84;
    case DType::Q3_K:
      return 110;
    case DType::Q4_K:
      return 144;
    case DType::Q5_K:
      return 176;
    case DType::Q6_K:
      return 210;
  }
  return 0;
}

/// Bytes of n values of dtype d (n a multiple of its block_size).
inline constexpr index_t bytes_of(DType d, index_t n) noexcept { return n / block_size(d) * size_of(d); }

/// The DType of a C++ element type: dtype_of_v<float> == DType::F32.
template <class T>
constexpr DType dtype_of() {
  using std::is_same_v;
  if constexpr (is_same_v<T, float>)
    return DType::F32;
  else if constexpr (is_same_v<T, Eigen::bfloat16>)
    return DType::BF16;
  else if constexpr (is_same_v<T, Eigen::half>)
    return DType::F16;
  else if constexpr (is_same_v<T, double>)
    return DType::F64;
  else if constexpr (is_same_v<T, std::int64_t>)
    return DType::I64;
  else if constexpr (is_same_v<T, std::int32_t>)
    return DType::I32;
  else if constexpr (is_same_v<T, std::int16_t>)
    return DType::I16;
  else if constexpr (is_same_v<T, std::int8_t>)
    return DType::I8;
  else if constexpr (is_same_v<T, std::uint8_t>)
    return DType::U8;
  else
    static_assert(sizeof(T) == 0, "moe::dtype_of<T>: T is not a tensor element type");
}
template <class T>
inline constexpr DType dtype_of_v = dtype_of<T>();

/// Weight element types the layer computes with; routing and accumulation
/// stay fp32 whatever the weights are. Block-quantised weights are weights
/// too (see is_block_quantised): every backend reads their rows dequantised.
inline constexpr bool is_weight_dtype(DType d) noexcept {
  return d == DType::F32 || d == DType::BF16 || d == DType::F16 || is_block_quantised(d);
}

/// Dequantises one block of a block-quantised dtype (block_size(d) values) into y.
inline void dequantize_block(DType d, const unsigned char* block, float* y) noexcept {
  switch (d) {
    case DType::Q4_0:
      return quant::dequantize_q4_0(block, y);
    case DType::Q4_1:
      return quant::dequantize_q4_1(block, y);
    case DType::Q5_0:
      return quant::dequantize_q5_0(block, y);
    case DType::Q5_1:
      return quant::dequantize_q5_1(block, y);
    case DType::Q8_0:
      return quant::dequantize_q8_0(block, y);
    case DType::Q2_K:
      return quant::dequantize_q2_k(block, y);
    case DType::Q3_K:
      return quant::dequantize_q3_k(block, y);
    case DType::Q4_K:
      return quant::dequantize_q4_k(block, y);
    case DType::Q5_K:
      return quant::dequantize_q5_k(block, y);
    case DType::Q6_K:
      return quant::dequantize_q6_k(block, y);
    default:
      return;
  }
}

/// bfloat16 is the upper half of a float32, so widening is a shift: exact.
inline float bf16_bits_to_float(std::uint16_t bits) noexcept {
  const std::uint32_t u = std::uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// bf16 bits of v, rounded to nearest even (NaN kept a NaN).
inline std::uint16_t bf16_bits(float v) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return std::uint16_t((u >> 16) | 0x40);
  return std::uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/// Reads element i of a weight buffer of dtype `d` as float (exact widening).
inline float load_as_float(const void* data, DType d, index_t i) noexcept {
  switch (d) {
    case DType::BF16: {
      std::uint16_t b;
      std::memcpy(&b, static_cast<const unsigned char*>(data) + 2 * i, 2);
      return bf16_bits_to_float(b);
    }
    case DType::F16: {
      Eigen::half h;
      std::memcpy(&h, static_cast<const unsigned char*>(data) + 2 * i, 2);
      return static_cast<float>(h);
    }
    default:
      if (is_block_quantised(d)) {
        float block[256];
        const index_t n = block_size(d);
        dequantize_block(d, static_cast<const unsigned char*>(data) + i / n * size_of(d), block);
        return block[i % n];
      }
      return static_cast<const float*>(data)[i];
  }
}

/// Index of the first NaN or infinity among the n elements of a weight
/// buffer of dtype `d`, or -1 when all are finite. Tests the exponent bits
/// (all ones: NaN or ±Inf in F32, BF16 and F16 alike): a pass over the
/// bits, no conversion per element (GCC vectorises it at -O3, not at -O2).
inline index_t first_non_finite(const void* data, DType d, index_t n) noexcept {
  const auto* bytes = static_cast<const unsigned char*>(data);
  const auto bytes_at = [&](index_t offset) { return bytes + offset; };
  const auto scan = [&]<class U>(U exponent) -> index_t {
    const auto bits = [&](index_t i) {  // memcpy: a mapped tensor need not be aligned
      U u;
      std::memcpy(&u, bytes + std::size_t(i) * sizeof(U), sizeof(U));
      return u;
    };
    constexpr index_t block = 4096;
    for (index_t begin = 0; begin < n; begin += block) {
      const index_t end = n - begin < block ? n : begin + block;
      bool any = false;
      for (index_t i = begin; i < end; ++i) any |= (bits(i) & exponent) == exponent;
      if (!any) continue;
      for (index_t i = begin; i < end; ++i)
        if ((bits(i) & exponent) == exponent) return i;
    }
    return -1;
  };
  switch (d) {
    case DType::F32:
      return scan(std::uint32_t(0x7F800000u));
    case DType::BF16:
      return scan(std::uint16_t(0x7F80u));
    case DType::F16:
      return scan(std::uint16_t(0x7C00u));
    default:
      break;
  }
  if (!is_block_quantised(d)) return -1;  // integer dtypes have no NaN
  // A block's values are small integers times its fp16 scales (and mins),
  // all finite products when the scales are: a block is non-finite exactly
  // when one of its fp16 fields has an all-ones exponent.
  int fields[2] = {0, -1};  // byte offsets of the fp16 fields (-1: none)
  switch (d) {
    case DType::Q4_1:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
      fields[1] = 2;
      break;
    case DType::Q2_K:
      fields[0] = 80, fields[1] = 82;
      break;
    case DType::Q3_K:
      fields[0] = 108;
      break;
    case DType::Q6_K:
      fields[0] = 208;
      break;
    default:
      break;
  }
  const index_t per = block_size(d), stride = size_of(d);
  for (index_t b = 0; b < n / per; ++b)
    for (const int f : fields) {
      if (f < 0) continue;
      std::uint16_t h;
      std::memcpy(&h, bytes_at(b * stride + f), 2);
      if ((h & 0x7C00u) == 0x7C00u) {  // the first value of the block that is not finite
        float y[256];
        dequantize_block(d, bytes_at(b * stride), y);
        for (index_t j = 0; j < per; ++j)
          if (!std::isfinite(y[j])) return b * per + j;
        return b * per;
      }
    }
  return -1;
}

/// Widens n consecutive weights starting at element `first` into dst
/// (dequantises, for a block-quantised dtype: `first` and n whole blocks).
inline void widen_to_float(const void* data, DType d, index_t first, index_t n, float* dst) noexcept {
  if (d == DType::F32) {
    std::memcpy(dst, static_cast<const float*>(data) + first, sizeof(float) * std::size_t(n));
    return;
  }
  if (d == DType::BF16) {
    const auto* src = static_cast<const std::uint16_t*>(data) + first;
    for (index_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(src[i]);
    return;
  }
  if (is_block_quantised(d)) {  // first and n: whole blocks (a row of a GGUF weight is)
    const index_t per = block_size(d);
    const auto* blocks = static_cast<const unsigned char*>(data) + first / per * size_of(d);
    for (index_t b = 0; b < n / per; ++b) dequantize_block(d, blocks + b * size_of(d), dst + b * per);
    return;
  }
  for (index_t i = 0; i < n; ++i) dst[i] = load_as_float(data, d, first + i);
}

}  // namespace moe
