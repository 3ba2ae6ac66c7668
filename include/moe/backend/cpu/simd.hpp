#pragma once
/// \file simd.hpp
/// The few vector helpers the kernels share, over any xsimd version the
/// library supports (Debian's 8.1 to vcpkg's and Conan's 13/14).

#include <xsimd/xsimd.hpp>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // declares every x86 intrinsic; a kernel uses one only in its ISA's instance
#endif

#include "moe/backend/cpu/isa.hpp"

/// On a kernel whose loop must have every helper inlined (the lambdas and
/// small functions it is written in): GCC's size heuristics otherwise may
/// outline one, and its accumulators then live in memory, a store-to-load
/// chain per step. Code the kernel calls rarely is marked MOE_COLD.
#if defined(__GNUC__) || defined(__clang__)
#define MOE_KERNEL [[gnu::flatten]]
#define MOE_COLD [[gnu::noinline, gnu::cold]]
#else
#define MOE_KERNEL
#define MOE_COLD
#endif

namespace moe::backend::cpu {

/// fp32 vector of an ISA.
template <class Isa>
using floats = xsimd::batch<float, typename Isa::simd>;

/// Sum of a vector's lanes (xsimd 8 calls it hadd; 9 and later reduce_add).
template <class B>
inline auto reduce_add(const B& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(v);
#else
  return xsimd::hadd(v);
#endif
}

}  // namespace moe::backend::cpu
