#pragma once
/// \file pair_gemm.hpp
/// C = A · Wᵀ in bf16 with vdpbf16ps (AVX512-BF16): numerics::Bf16Compute on
/// a CPU that has the instruction. Each 32-bit lane of a vdpbf16ps holds two
/// bf16 of consecutive k, and the instruction adds both products of a lane
/// to its fp32 accumulator: 32 multiply-adds per 512-bit instruction where
/// fp32 FMAs do 16, the same arithmetic oneDNN and PyTorch use for bf16.
///
/// Weights: PanelMatrix in BF16 with `pairs` set (panels.hpp): per pair of
/// k, each column's two bf16 side by side, so one k-pair step of a panel is
/// two vectors of 16 columns. Activations: rounded to bf16 (nearest even)
/// and laid out like panel_gemm's rows (RowLayout: depth blocks, groups of
/// panel_rows rows) but over k pairs, one 32-bit word (k even in the low
/// half) per row and pair, so one 32-bit broadcast gives a row's pair. An
/// odd depth is padded with a zero k on both sides.
///
/// The tile is panel_gemm's: MR rows × 2 vectors of accumulators, partial
/// sums through C between depth blocks, every output one chain over the k
/// pairs in order, so the bits do not depend on tiling, rows or threads.

#include <algorithm>
#include <cstdint>

#include "moe/backend/cpu/panel_gemm.hpp"
#include "moe/backend/cpu/panels.hpp"
#include "moe/backend/cpu/simd.hpp"

namespace moe::backend::cpu {

/// The layout of n rows of depth K as k pairs: RowLayout over ⌈K/2⌉ pairs,
/// with depth blocks of KC/2 pairs (the whole depth for one row group).
inline RowLayout pair_layout(index_t n, index_t K) noexcept {
  const index_t pairs = (K + 1) / 2;
  const RowLayout L = RowLayout::of(n, K);
  return {n, pairs, L.block == K ? pairs : L.block / 2, L.padded};
}

/// bf16(lo) | bf16(hi) << 16: one row's pair of consecutive k.
inline std::uint32_t bf16_pair(float lo, float hi) noexcept {
  return std::uint32_t(bf16_bits(lo)) | std::uint32_t(bf16_bits(hi)) << 16;
}

/// Copies A [L.rows, K] (rows lda apart) into pair layout L, rounding to bf16.
inline void pack_row_pairs(const float* A, index_t lda, index_t K, const RowLayout& L, std::uint32_t* dst) noexcept {
  for (index_t i = 0; i < L.rows; ++i) {
    const float* a = A + i * lda;
    for (index_t kp = 0; kp < L.depth; ++kp) {
      const index_t k = 2 * kp;
      dst[L.at(i, kp)] = bf16_pair(a[k], k + 1 < K ? a[k + 1] : 0.0f);
    }
  }
}

/// C[MR, NR] (+)= A[MR, kpc pairs] · panel[kpc pairs, NR] with P panels side
/// by side (P > 1: decode, where one panel's 2·MR chains would wait on the
/// instruction's latency). NR = 32: two vectors of 16 fp32 columns.
template <class Isa, int MR, int P>
void pair_tile(const std::uint32_t* a, const std::byte* panel, index_t panel_bytes, index_t kpc, float* c, index_t ldc,
               bool accumulate, const std::byte* next) noexcept {
  static_assert(Isa::bf16, "pair_tile: vdpbf16ps needs AVX512-BF16");
  constexpr index_t NR = 32, step_bytes = 2 * NR * 2;  // two bf16 of 32 columns per k pair
  __m512 c0[P][MR], c1[P][MR];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      c0[p][i] = accumulate ? _mm512_loadu_ps(c + i * ldc + p * NR) : _mm512_setzero_ps();
      c1[p][i] = accumulate ? _mm512_loadu_ps(c + i * ldc + p * NR + 16) : _mm512_setzero_ps();
    }
  for (index_t kp = 0; kp < kpc; ++kp) {
    if (P == 1 && next && kp * 64 < kpc * step_bytes) __builtin_prefetch(next + kp * 64);
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      const std::byte* step = panel + p * panel_bytes + kp * step_bytes;
      const __m512bh b0 = __m512bh(_mm512_load_si512(step));
      const __m512bh b1 = __m512bh(_mm512_load_si512(step + 64));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512bh ai = __m512bh(_mm512_set1_epi32(std::int32_t(a[kp * panel_rows + i])));
        c0[p][i] = _mm512_dpbf16_ps(c0[p][i], ai, b0);
        c1[p][i] = _mm512_dpbf16_ps(c1[p][i], ai, b1);
      }
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      _mm512_storeu_ps(c + i * ldc + p * NR, c0[p][i]);
      _mm512_storeu_ps(c + i * ldc + p * NR + 16, c1[p][i]);
    }
}

/// C [L.rows, count·NR] = A · panels [first, first + count) of B, A in pair
/// layout L (pack_row_pairs), B in BF16 pairs; C rows ldc apart.
template <class Isa>
void pair_gemm(const std::uint32_t* A, const RowLayout& L, const PanelMatrix& B, index_t first, index_t count, float* C,
               index_t ldc) noexcept {
  const index_t NR = B.width, n = L.rows, pairs = L.depth;
  const index_t panel_bytes = B.at(1, 0) - B.at(0, 0);
  if (n <= 2) {  // decode: four panels at a time (L.block is the whole depth here)
    constexpr int P = 4;
    index_t p = 0;
    for (; p + P <= count; p += P) {
      const std::byte* panel = B.at(first + p, 0);
      if (n == 1)
        pair_tile<Isa, 1, P>(A, panel, panel_bytes, pairs, C + p * NR, ldc, false, nullptr);
      else
        pair_tile<Isa, 2, P>(A, panel, panel_bytes, pairs, C + p * NR, ldc, false, nullptr);
    }
    for (; p < count; ++p) {
      const std::byte* panel = B.at(first + p, 0);
      if (n == 1)
        pair_tile<Isa, 1, 1>(A, panel, panel_bytes, pairs, C + p * NR, ldc, false, nullptr);
      else
        pair_tile<Isa, 2, 1>(A, panel, panel_bytes, pairs, C + p * NR, ldc, false, nullptr);
    }
    return;
  }
  for (index_t kp0 = 0; kp0 < pairs; kp0 += L.block) {
    const index_t kpc = std::min(L.block, pairs - kp0);
    const bool accumulate = kp0 > 0;
    for (index_t p = 0; p < count; ++p) {
      const std::byte* panel = B.at(first + p, 2 * kp0);
      const std::byte* next = p + 1 < count       ? B.at(first + p + 1, 2 * kp0)
                              : kp0 + kpc < pairs ? B.at(first, 2 * (kp0 + kpc))
                                                  : nullptr;
      for (index_t i = 0; i < n; i += panel_rows) {
        const std::uint32_t* a = A + L.at(i, kp0);
        float* c = C + i * ldc + p * NR;
        if (i > 0) next = nullptr;  // the first row group fetches it
        with_tile_rows(std::min<index_t>(panel_rows, n - i),
                       [&]<int MR>() { pair_tile<Isa, MR, 1>(a, panel, panel_bytes, kpc, c, ldc, accumulate, next); });
      }
    }
  }
}

}  // namespace moe::backend::cpu
