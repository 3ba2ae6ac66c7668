#pragma once
/// \file checked.hpp
/// Size arithmetic on numbers that come from outside (a file's shapes and
/// offsets, a config's sizes). A product of dimensions read from a file can
/// exceed 2^63 or wrap at 2^64, and a wrapped byte count can match the bytes
/// a file holds: `F32 [2^62 + 1]` "needs" 4 bytes. Every such product and
/// sum goes through these functions, which refuse to overflow and name what
/// was being computed.

#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe::checked {

/// a · b for a, b ≥ 0; a moe::Error (`code`, naming `what`) if it exceeds index_t.
inline index_t mul(index_t a, index_t b, std::string_view what, ErrorCode code = ErrorCode::bad_file) {
  index_t out = 0;
  detail::require(a >= 0 && b >= 0, code, what, ": negative size (", a, " * ", b, ")");
  detail::require(!__builtin_mul_overflow(a, b, &out), code, what, ": ", a, " * ", b, " exceeds 2^63 - 1");
  return out;
}

/// a + b for a, b ≥ 0, checked as mul().
inline index_t add(index_t a, index_t b, std::string_view what, ErrorCode code = ErrorCode::bad_file) {
  index_t out = 0;
  detail::require(a >= 0 && b >= 0, code, what, ": negative size (", a, " + ", b, ")");
  detail::require(!__builtin_add_overflow(a, b, &out), code, what, ": ", a, " + ", b, " exceeds 2^63 - 1");
  return out;
}

/// a · b in unsigned 64-bit bytes; an Error naming `what` if it wraps.
inline std::uint64_t mul_bytes(std::uint64_t a, std::uint64_t b, std::string_view what,
                               ErrorCode code = ErrorCode::bad_file) {
  std::uint64_t out = 0;
  detail::require(!__builtin_mul_overflow(a, b, &out), code, what, ": ", a, " * ", b, " bytes exceeds 2^64");
  return out;
}

/// The number of elements of a shape: 0 when any dimension is 0 (whatever
/// the others), else the product, each step checked.
inline index_t numel(std::span<const index_t> shape, std::string_view what, ErrorCode code = ErrorCode::bad_file) {
  for (const index_t d : shape) {
    detail::require(d >= 0, code, what, ": negative dimension ", d);
    if (d == 0) return 0;
  }
  index_t n = 1;
  for (const index_t d : shape) n = mul(n, d, what, code);
  return n;
}

}  // namespace moe::checked
