#pragma once
/// \file int8_gemm.hpp
/// C = A · Wᵀ in int8 (numerics::Int8): u7 activations × s8 weights summed
/// exactly in int32, then dequantised.
///
/// Activations: each row (token) is quantised on its own, asymmetric with a
/// zero point, to 0 … 127: q = round(a / s) + z, s = (max − min) / 127 over
/// the row (the range always holds 0, so 0 is exact). Rows are laid out in
/// groups of int8_rows, per quad of 4 k each row's 4 bytes side by side, so
/// one 32-bit broadcast gives a row's quad. Weights: PanelMatrix in I8.
///
/// The AVX2 micro-kernel: per quad, vpmaddubsw multiplies the broadcast u8
/// quad with a weight vector (8 columns × 4 k of s8) into adjacent-pair
/// int16 sums (≤ 2 · 127 · 127, no saturation because activations are 7
/// bits), vpmaddwd with ones adds the pairs into int32, vpaddd accumulates.
/// Where the compiler targets VNNI (AVX-VNNI or AVX512-VNNI), vpdpbusd does
/// the three in one instruction, with the same integer result.
/// int8_rows × 2 accumulators + 2 weights + ones + a broadcast + a temporary
/// fit AVX2's 16 registers, so the AVX2 tile takes a group's rows four at a
/// time. The AVX-512 tile takes all eight: 16 vpdpbusd chains, enough to
/// keep two VNNI units busy through the instruction's latency (four rows,
/// eight chains, left a third of the VNNI peak unused). Integer sums are
/// exact, so the result does not depend on tiling, threads or which path
/// (SIMD or the portable loop) ran.
///
/// Dequantised: y[i, f] = s_i · s_f · (acc[i, f] − z_i · Σ_k w_q[f, k]).

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "moe/backend/cpu/panel_gemm.hpp"
#include "moe/backend/cpu/panels.hpp"
#include "moe/backend/cpu/simd.hpp"

namespace moe::backend::cpu {

constexpr int int8_rows = 8;  ///< rows per group: the AVX-512 tile's height

/// Where n quantised rows of depth K sit: groups of int8_rows rows, each
/// group [K/4 quads][int8_rows][4 bytes]. Plus one scale and zero per row.
struct QuantRows {
  index_t rows = 0, depth = 0;
  static QuantRows of(index_t n, index_t K) noexcept { return {n, K}; }
  index_t quads() const noexcept { return (depth + 3) / 4; }
  index_t groups() const noexcept { return (rows + int8_rows - 1) / int8_rows; }
  std::size_t bytes() const noexcept { return std::size_t(groups() * int8_rows * quads() * 4); }
  std::size_t group_offset(index_t g) const noexcept { return std::size_t(g * quads() * int8_rows * 4); }
};

/// Quantises A [n, K] (rows lda apart) row by row into layout L, with each
/// row's scale and zero point.
inline void quantize_rows(const float* A, index_t lda, const QuantRows& L, std::uint8_t* dst, float* scale,
                          std::int32_t* zero) noexcept {
  std::fill(dst, dst + L.bytes(), std::uint8_t(0));
  for (index_t i = 0; i < L.rows; ++i) {
    const float* a = A + i * lda;
    float lo = 0.0f, hi = 0.0f;
    for (index_t k = 0; k < L.depth; ++k) {
      lo = std::min(lo, a[k]);
      hi = std::max(hi, a[k]);
    }
    const float s = hi > lo ? (hi - lo) / 127.0f : 1.0f;
    const float z = std::clamp(std::nearbyint(-lo / s), 0.0f, 127.0f);
    scale[i] = s;
    zero[i] = std::int32_t(z);
    std::uint8_t* d = dst + L.group_offset(i / int8_rows) + (i % int8_rows) * 4;
    for (index_t k = 0; k < L.depth; ++k)
      d[(k / 4) * int8_rows * 4 + k % 4] = std::uint8_t(std::clamp(std::nearbyint(a[k] / s) + z, 0.0f, 127.0f));
    // Padding k ≥ K stays 0: its weights are 0, so it adds nothing.
  }
}

/// The AVX2 tile (NR = 16: two vectors of 8 int32 columns). Per quad the
/// broadcast u8 quad times a weight vector: vpmaddubsw + vpmaddwd + vpaddd,
/// or one vpdpbusd where the ISA has VNNI.
template <class Isa, int MR>
void int8_tile_avx2(const std::uint8_t* a, const std::int8_t* panel, index_t quads, std::int32_t* c, index_t ldc,
                    const std::int8_t* next) noexcept {
  __m256i acc0[MR], acc1[MR];
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm256_setzero_si256();
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);
  for (index_t q = 0; q < quads; ++q) {
    if (next) __builtin_prefetch(next + q * 64);
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + q * 64));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + q * 64 + 32));
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      std::int32_t quad;
      std::memcpy(&quad, a + (q * int8_rows + i) * 4, 4);
      const __m256i ai = _mm256_set1_epi32(quad);
      if constexpr (Isa::vnni && Isa::avx512) {
        acc0[i] = _mm256_dpbusd_epi32(acc0[i], ai, b0);  // VNNI: the same sums in one instruction
        acc1[i] = _mm256_dpbusd_epi32(acc1[i], ai, b1);
      } else {
        acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(_mm256_maddubs_epi16(ai, b0), ones));
        acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(_mm256_maddubs_epi16(ai, b1), ones));
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + i * ldc), acc0[i]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + i * ldc + 8), acc1[i]);
  }
}

/// The AVX-512 tile (NR = 32: two vectors of 16 int32 columns): the AVX2
/// tile at full width, one vpdpbusd per vector and quad where the ISA has
/// AVX512-VNNI, else vpmaddubsw + vpmaddwd + vpaddd. Half the instructions
/// and loads of the AVX2 tile per multiply-add.
template <class Isa, int MR>
void int8_tile_avx512(const std::uint8_t* a, const std::int8_t* panel, index_t quads, std::int32_t* c, index_t ldc,
                      const std::int8_t* next) noexcept {
  __m512i acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm512_setzero_si512();
  [[maybe_unused]] const __m512i ones = _mm512_set1_epi16(1);
  for (index_t q = 0; q < quads; ++q) {
    if (next) {
      __builtin_prefetch(next + q * 128);
      __builtin_prefetch(next + q * 128 + 64);
    }
    const __m512i b0 = _mm512_load_si512(panel + q * 128);
    const __m512i b1 = _mm512_load_si512(panel + q * 128 + 64);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      std::int32_t quad;
      std::memcpy(&quad, a + (q * int8_rows + i) * 4, 4);
      const __m512i ai = _mm512_set1_epi32(quad);
      if constexpr (Isa::vnni) {
        acc0[i] = _mm512_dpbusd_epi32(acc0[i], ai, b0);
        acc1[i] = _mm512_dpbusd_epi32(acc1[i], ai, b1);
      } else {
        acc0[i] = _mm512_add_epi32(acc0[i], _mm512_madd_epi16(_mm512_maddubs_epi16(ai, b0), ones));
        acc1[i] = _mm512_add_epi32(acc1[i], _mm512_madd_epi16(_mm512_maddubs_epi16(ai, b1), ones));
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm512_storeu_si512(c + i * ldc, acc0[i]);
    _mm512_storeu_si512(c + i * ldc + 16, acc1[i]);
  }
}

/// acc[MR, NR] = Σ over `quads` of A group (u8) × panel (s8); C rows ldc apart (int32).
template <class Isa, int MR>
void int8_tile(const std::uint8_t* a, const std::int8_t* panel, index_t quads, index_t width, std::int32_t* c,
               index_t ldc, const std::int8_t* next) noexcept {
  if constexpr (Isa::avx512) {
    if (width == 32) return int8_tile_avx512<Isa, MR>(a, panel, quads, c, ldc, next);
  }
  if constexpr (MR > 4) {  // the narrower tiles: rows 0-3 of the group, then the rest
    int8_tile<Isa, 4>(a, panel, quads, width, c, ldc, next);
    return int8_tile<Isa, MR - 4>(a + 4 * 4, panel, quads, width, c + 4 * ldc, ldc, nullptr);
  }
  if constexpr (Isa::avx2) {
    if (width == 16) return int8_tile_avx2<Isa, MR>(a, panel, quads, c, ldc, next);
  }
  (void)next;
  // Portable path: the same integer sums, one column at a time.
  for (int i = 0; i < MR; ++i)
    for (index_t j = 0; j < width; ++j) {
      std::int32_t s = 0;
      for (index_t q = 0; q < quads; ++q)
        for (int t = 0; t < 4; ++t)
          s += std::int32_t(a[(q * int8_rows + i) * 4 + t]) * std::int32_t(panel[(q * width + j) * 4 + t]);
      c[i * ldc + j] = s;
    }
}

/// C[n, count·NR] (int32) = the n quantised rows of `A` (layout L) · panels
/// [first, first + count) of B (I8); rows taken int8_rows at a time. Each
/// panel is read whole (depth/4 quads of NR·4 bytes: at most a few hundred
/// KiB, L2-resident across the row groups) and the next one is prefetched.
template <class Isa>
void int8_gemm(const std::uint8_t* A, const QuantRows& L, const PanelMatrix& B, index_t first, index_t count,
               std::int32_t* C, index_t ldc) noexcept {
  const index_t NR = B.width, quads = L.quads();
  for (index_t p = 0; p < count; ++p) {
    const auto* panel = reinterpret_cast<const std::int8_t*>(B.at(first + p, 0));
    const auto* next = p + 1 < count ? reinterpret_cast<const std::int8_t*>(B.at(first + p + 1, 0)) : nullptr;
    for (index_t g = 0; g < L.groups(); ++g) {
      const std::uint8_t* a = A + L.group_offset(g);
      std::int32_t* c = C + g * int8_rows * ldc + p * NR;
      const auto* prefetch = g == 0 ? next : nullptr;
      with_rows_upto<int8_rows>(std::min<index_t>(int8_rows, L.rows - g * int8_rows),
                                [&]<int MR>() { int8_tile<Isa, MR>(a, panel, quads, NR, c, ldc, prefetch); });
    }
  }
}

/// Dequantises one int32 result: s_i · s_f · (acc − z_i · Σ_k w_q[f, k]).
inline float dequantize(std::int32_t acc, float row_scale, std::int32_t row_zero, float col_scale,
                        std::int32_t col_sum) noexcept {
  return row_scale * col_scale * float(acc - row_zero * col_sum);
}

/// out[j] = dequantize(acc[j], row_scale, row_zero, col_scale[j], col_sum[j])
/// for j < n: a vector of columns at a time where the ISA has AVX2 or
/// AVX-512, with the scalar's operations in its order (exact integer
/// correction, then the two products), so every lane gives the scalar's bits.
template <class Isa>
void dequantize_row(const std::int32_t* acc, float row_scale, std::int32_t row_zero, const float* col_scale,
                    const std::int32_t* col_sum, index_t n, float* out) noexcept {
  index_t j = 0;
  if constexpr (Isa::avx512) {
    const __m512 rs = _mm512_set1_ps(row_scale);
    const __m512i rz = _mm512_set1_epi32(row_zero);
    for (; j + 16 <= n; j += 16) {
      const __m512i corrected =
          _mm512_sub_epi32(_mm512_loadu_si512(acc + j), _mm512_mullo_epi32(rz, _mm512_loadu_si512(col_sum + j)));
      const __m512 scale = _mm512_mul_ps(rs, _mm512_loadu_ps(col_scale + j));
      _mm512_storeu_ps(out + j, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(corrected)));
    }
  } else if constexpr (Isa::avx2) {
    const __m256 rs = _mm256_set1_ps(row_scale);
    const __m256i rz = _mm256_set1_epi32(row_zero);
    for (; j + 8 <= n; j += 8) {
      const auto* a = reinterpret_cast<const __m256i*>(acc + j);
      const auto* sums = reinterpret_cast<const __m256i*>(col_sum + j);
      const __m256i corrected =
          _mm256_sub_epi32(_mm256_loadu_si256(a), _mm256_mullo_epi32(rz, _mm256_loadu_si256(sums)));
      const __m256 scale = _mm256_mul_ps(rs, _mm256_loadu_ps(col_scale + j));
      _mm256_storeu_ps(out + j, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(corrected)));
    }
  }
  for (; j < n; ++j) out[j] = dequantize(acc[j], row_scale, row_zero, col_scale[j], col_sum[j]);
}

}  // namespace moe::backend::cpu
