#pragma once
/// \file version.hpp
/// The library version: the single source of truth CMake parses.

#define MOE_VERSION_MAJOR 0
#define MOE_VERSION_MINOR 1
#define MOE_VERSION_PATCH 0

namespace moe {
inline constexpr int version_major = MOE_VERSION_MAJOR;
inline constexpr int version_minor = MOE_VERSION_MINOR;
inline constexpr int version_patch = MOE_VERSION_PATCH;
}  // namespace moe
