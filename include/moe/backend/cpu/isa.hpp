#pragma once
/// \file isa.hpp
/// The instruction sets the CPU kernels are written for, as types.
///
/// Every kernel takes its ISA as a template parameter and picks its
/// instructions with `if constexpr` on it, never with `#if __AVX2__` inside
/// a shared function: a kernel's body is the same token sequence in every
/// translation unit (no ODR violation when units are built with different
/// -m flags), and one program can hold an AVX2 and an AVX-512 instance of
/// the same kernel, each compiled in its own unit, and pick at start-up
/// (xsimd's dispatch pattern; see moe/backend/cpu/dispatch.hpp and
/// moe/backend/cpu/launch.hpp).
///
/// An ISA names the xsimd architecture its vectors use (`simd`) and the
/// extra instructions its kernels may issue. Instantiating a kernel for an
/// ISA needs a translation unit compiled for it (-mavx2 -mfma, then
/// -mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl, then -mavx512vnni
/// -mavx512bf16: the flags cmake/moeIsaUnits.cmake gives each level);
/// `isa::Native` is the best ISA the current unit's flags allow, and the
/// default everywhere.

#include <xsimd/xsimd.hpp>

#include "moe/backend/cpu/level.hpp"

#include <concepts>
#include <string_view>
#include <type_traits>

namespace moe::isa {

/// What every CPU of the target has: SSE2 on x86-64, else xsimd's default.
struct Baseline {
#if XSIMD_WITH_SSE2
  using simd = xsimd::sse2;
#else
  using simd = xsimd::default_arch;
#endif
  static constexpr std::string_view name = "baseline";
  static constexpr int level = 0;
  static constexpr bool avx2 = false, avx512 = false, vnni = false, bf16 = false;
};

#if XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2
/// AVX2 with FMA (Haswell and later, every Zen).
struct Avx2 {
  using simd = xsimd::fma3<xsimd::avx2>;
  static constexpr std::string_view name = "avx2";
  static constexpr int level = 1;
  static constexpr bool avx2 = true, avx512 = false, vnni = false, bf16 = false;
};
#endif

#if XSIMD_WITH_AVX512BW
/// AVX-512 F/BW/DQ/VL (Skylake-X and later).
struct Avx512 {
  using simd = xsimd::avx512bw;
  static constexpr std::string_view name = "avx512";
  static constexpr int level = 2;
  static constexpr bool avx2 = true, avx512 = true, vnni = false, bf16 = false;
};
#if defined(__AVX512VNNI__) && defined(__AVX512BF16__)
/// AVX-512 with VNNI (vpdpbusd) and BF16 (vdpbf16ps): Cooper Lake,
/// Sapphire Rapids, Zen 4 and later.
struct Avx512Bf16 {
  using simd = xsimd::avx512bw;
  static constexpr std::string_view name = "avx512-bf16";
  static constexpr int level = 3;
  static constexpr bool avx2 = true, avx512 = true, vnni = true, bf16 = true;
};
#endif
#endif

/// The best ISA this translation unit is compiled for. The macros are read
/// here and only here, to name a type: units built with different flags get
/// different types (and so different kernel instances), never one function
/// with two bodies.
#if defined(__AVX512VNNI__) && defined(__AVX512BF16__) && XSIMD_WITH_AVX512BW
using Native = Avx512Bf16;
#elif XSIMD_WITH_AVX512BW
using Native = Avx512;
#elif XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2
using Native = Avx2;
#else
using Native = Baseline;
#endif

/// Every ISA this unit carries, lowest first: Native and each level below it.
template <class... I>
struct List {};
#if defined(__AVX512VNNI__) && defined(__AVX512BF16__) && XSIMD_WITH_AVX512BW
using Carried = List<Baseline, Avx2, Avx512, Avx512Bf16>;
#elif XSIMD_WITH_AVX512BW
using Carried = List<Baseline, Avx2, Avx512>;
#elif XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2
using Carried = List<Baseline, Avx2>;
#else
using Carried = List<Baseline>;
#endif

template <class I>
concept Isa = requires {
  typename I::simd;
  { I::name } -> std::convertible_to<std::string_view>;
  { I::avx2 } -> std::convertible_to<bool>;
  { I::avx512 } -> std::convertible_to<bool>;
  { I::vnni } -> std::convertible_to<bool>;
  { I::bf16 } -> std::convertible_to<bool>;
};

}  // namespace moe::isa
