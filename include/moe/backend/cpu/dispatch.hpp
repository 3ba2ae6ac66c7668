#pragma once
/// \file dispatch.hpp
/// Picking an ISA at run time among those a translation unit carries.
///
/// A unit compiled for a level (say -march=native on an AVX-512 machine)
/// carries the kernels of that level and of every lower one: `isa::Avx2`
/// exists wherever `isa::Avx512` does. with_isa(level, fn) calls
/// fn.template operator()<I>() with the ISA type of `level`, so a program
/// can run the best level the CPU supports, or a lower one it is asked for
/// (`--isa avx2`):
///
///   moe::isa::with_isa(moe::isa::parse(option), [&]<class I>() {
///     run(moe::backend::Cpu<moe::numerics::AsStored, I>(threads));
///   });
///
/// A level above what the unit carries, or above what the CPU supports, is
/// a moe::Error naming both. To ship one binary for CPUs of several levels,
/// build the program once per level and let a start-up unit pick
/// (moe/backend/cpu/launch.hpp, and the CMake function
/// moe_add_isa_executable that does both).

#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>
#include <string_view>
#include <vector>

#include "moe/backend/cpu/isa.hpp"
#include "moe/core/error.hpp"

namespace moe::isa {

/// The level this unit was compiled for: the highest it carries.
inline constexpr Level compiled_level = Level(Native::level);

/// Levels this unit carries and this CPU runs, lowest first.
inline std::vector<Level> available_levels() {
  std::vector<Level> out;
  const int top = std::min(int(compiled_level), int(cpu_level()));
  for (int l = 0; l <= top; ++l) out.push_back(Level(l));
  return out;
}

/// The best level this unit carries that this CPU runs.
inline Level best_level() { return available_levels().back(); }

/// "baseline", "avx2", "avx512", "avx512-bf16", or "native" (best_level()).
inline Level parse(std::string_view s) {
  if (s == "native") return best_level();
  if (const auto l = level_named(s)) return *l;
  throw Error(ErrorCode::invalid_argument,
              moe::detail::cat("--isa: expected native, baseline, avx2, avx512 or avx512-bf16, got '", s, "'"));
}

namespace detail {
template <class Fn, class First, class... Rest>
decltype(auto) call_for_level(Level level, Fn&& fn, List<First, Rest...>) {
  if constexpr (sizeof...(Rest) == 0) {
    return fn.template operator()<First>();
  } else {
    if (int(level) == First::level) return fn.template operator()<First>();
    return call_for_level(level, std::forward<Fn>(fn), List<Rest...>{});
  }
}
}  // namespace detail

/// The ISAs a program offers when instantiating every carried one would
/// cost too much build time (a whole decoder per ISA): AVX2, the floor of
/// x86-64 servers of the last decade, and the build's native one. A unit of
/// a multi-ISA program (moe_add_isa_executable defines MOE_ISA_UNIT) offers
/// only its own: the program's other units carry the lower levels, built
/// for them.
#if defined(MOE_ISA_UNIT) || !(XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2)
using Offered = List<Native>;
#else
using Offered = std::conditional_t<std::is_same_v<Native, Avx2>, List<Avx2>, List<Avx2, Native>>;
#endif

/// Levels of a list this CPU runs, lowest first.
template <class... I>
std::vector<Level> runnable(List<I...>) {
  std::vector<Level> out;
  ((int(cpu_level()) >= I::level ? out.push_back(Level(I::level)) : void()), ...);
  return out;
}

/// Calls fn.template operator()<I>() for the ISA type of `level` among the
/// list `among` (default: every carried ISA); every branch returns the same type.
template <class Fn, class... I>
decltype(auto) with_isa(Level level, Fn&& fn, List<I...> among) {
  moe::detail::require(int(level) <= int(compiled_level), ErrorCode::unsupported, "ISA ", name(level),
                       " is not compiled into this program (built for ", name(compiled_level), ")");
  moe::detail::require(int(level) <= int(cpu_level()), ErrorCode::unsupported, "ISA ", name(level),
                       " is not supported by this CPU (it runs ", name(cpu_level()), ")");
  moe::detail::require(((int(level) == I::level) || ...), ErrorCode::unsupported, "ISA ", name(level),
                       " is not one this program offers (",
                       [] {
                         std::string names;
                         ((names += (names.empty() ? "" : ", ") + std::string(I::name)), ...);
                         return names;
                       }(),
                       ")");
  return detail::call_for_level(level, std::forward<Fn>(fn), among);
}
template <class Fn>
decltype(auto) with_isa(Level level, Fn&& fn) {
  return with_isa(level, std::forward<Fn>(fn), Carried{});
}

}  // namespace moe::isa
