#pragma once
/// \file level.hpp
/// The x86-64 levels moe's CPU kernels are written for, as plain values:
/// what a program was built for and what the running CPU supports (the
/// compiler flags of each are in cmake/moeIsaUnits.cmake). Needs no SIMD
/// header, so a start-up unit built for the oldest CPU can include it (see
/// moe/backend/cpu/launch.hpp).

#include <cstdlib>
#include <optional>
#include <string_view>

namespace moe::isa {

/// Levels, lowest first. Each includes the ones below it.
enum class Level { baseline = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };

inline constexpr Level top_level = Level::avx512_bf16;

inline constexpr std::string_view name(Level l) noexcept {
  switch (l) {
    case Level::baseline:
      return "baseline";
    case Level::avx2:
      return "avx2";
    case Level::avx512:
      return "avx512";
    case Level::avx512_bf16:
      return "avx512-bf16";
  }
  return "?";
}

/// The level called `s` ("baseline", "avx2", "avx512", "avx512-bf16"), if any.
inline constexpr std::optional<Level> level_named(std::string_view s) noexcept {
  for (int l = 0; l <= int(top_level); ++l)
    if (name(Level(l)) == s) return Level(l);
  return std::nullopt;
}

/// The highest level the running CPU (and OS) supports.
inline Level cpu_level() noexcept {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
  return bf16 ? Level::avx512_bf16 : avx512 ? Level::avx512 : avx2 ? Level::avx2 : Level::baseline;
#else
  return Level::baseline;
#endif
}

/// Whether numerics::Bf16Compute should run on vdpbf16ps where the ISA has
/// it (pair_gemm.hpp), or widen bf16 to fp32 FMAs. By moe-bench's limits:
/// a run on AMD Zen 4 reported the bf16 dot peak at twice the FP32 FMA peak
/// (449 against 229 GFLOP/s on 2 cores), and on a 2-core Zen 5 it measured
/// 1000 against 546 (Mixtral layer at T = 512: 464 ms on vdpbf16ps, 715 on
/// the FMAs); on a 2-core Intel Xeon with AMX it measured half (151 against
/// 296), and there the fp32 kernel on bf16 panels is the faster. So: AMD
/// yes, others no; MOE_BF16_DOT=1 or 0 overrides (read when a layer packs
/// its experts).
inline bool bf16_dot_preferred() noexcept {
  if (const char* v = std::getenv("MOE_BF16_DOT"); v != nullptr && *v != '\0') return *v == '1';
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_is("amd");
#else
  return false;
#endif
}

}  // namespace moe::isa
