#pragma once
/// \file half.hpp
/// fp32 to the fp16 bits of a block's scale fields (what quantisers store;
/// block_formats.hpp reads them back).

#include <Eigen/Core>  // Eigen::half

#include <cstdint>
#include <cstring>

namespace moe::quant {

/// fp32 to fp16 bits, rounded to nearest even (overflow to ±inf), as numpy's
/// astype(float16) and ggml's GGML_FP32_TO_FP16.
inline std::uint16_t float_to_half(float f) noexcept { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(f)); }

namespace detail {
inline void put_half(unsigned char* p, float f) noexcept {
  const std::uint16_t h = float_to_half(f);
  std::memcpy(p, &h, 2);
}
}  // namespace detail

}  // namespace moe::quant
