#pragma once
/// \file utf8.hpp
/// Counting UTF-8 text by characters, as Python's len() counts a str.

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace moe::text {

/// Code points of UTF-8 text: its bytes that do not continue a character.
inline std::size_t code_points(std::string_view s) noexcept {
  return std::size_t(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

}  // namespace moe::text
