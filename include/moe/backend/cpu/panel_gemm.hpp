#pragma once
/// \file panel_gemm.hpp
/// C = A · Wᵀ against packed panels (panels.hpp): the compute-bound kernel.
///
/// The micro-kernel keeps an MR × NR tile of C in registers (MR token rows ×
/// two SIMD vectors of output features: 6 × 2 = 12 accumulators, 2 weight
/// vectors and 1 broadcast activation = 15 of AVX2's 16 registers). Each k
/// step loads two weight vectors once and reuses them for MR tokens: 2·MR
/// FMAs per 2 vector loads + MR broadcasts, so the FMA units, not the loads,
/// set the pace.
///
/// Cache blocking: the depth is cut into blocks of KC = 256. One panel's
/// block (KC × NR weights: 16 KiB in fp32) stays in L1 while every MR-row
/// group of the task's tokens runs over it; the tokens' block (rows × KC),
/// copied k-major in groups of MR rows so the broadcasts read one
/// contiguous stream (rows of A lie 4 KiB apart for d_model 1024 and would
/// fight over the same L1 sets), stays in L2 across the task's panels. With
/// a single row group (decode) there is nothing to reuse and each panel is
/// streamed front to back instead. Partial sums go through C between depth
/// blocks, so each output is one fp32 FMA chain over k = 0 … K-1 in order:
/// the same bits whatever the tiling, row count or thread.

#include <algorithm>
#include <cstdint>

#include "moe/backend/cpu/panels.hpp"
#include "moe/backend/cpu/simd.hpp"

namespace moe::backend::cpu {

constexpr index_t panel_depth_block = 256;  ///< KC
constexpr int panel_rows = 6;               ///< MR

/// Two fp32 vectors from one k step of a panel: columns 0…W-1 and W…2W-1.
template <class Isa, DType Stored>
struct PanelStep;

template <class Isa>
struct PanelStep<Isa, DType::F32> {
  using batch = floats<Isa>;
  static void load(const void* p, index_t k, batch& lo, batch& hi) noexcept {
    const float* f = static_cast<const float*>(p) + k * 2 * index_t(batch::size);
    lo = batch::load_aligned(f);
    hi = batch::load_aligned(f + batch::size);
  }
};

/// BF16: one vector of 32-bit words, each holding column i (low half) and
/// column W + i (high half). bf16 is the top half of an fp32, so a shift
/// left by 16 gives column i, and masking the low half gives column W + i.
template <class Isa>
struct PanelStep<Isa, DType::BF16> {
  using batch = floats<Isa>;
  static constexpr std::size_t W = batch::size;
  static void load(const void* p, index_t k, batch& lo, batch& hi) noexcept {
    const auto* words = static_cast<const std::uint32_t*>(p) + k * index_t(W);
    if constexpr (Isa::avx512 && W == 16) {
      const __m512i v = _mm512_load_si512(words);
      lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(std::int32_t(0xFFFF0000u))));
    } else if constexpr (Isa::avx2 && W == 8) {
      const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(words));
      lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
      hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(std::int32_t(0xFFFF0000u))));
    } else {
      // Portable path (any other architecture xsimd targets): widen through memory.
      alignas(64) float l[W], h[W];
      for (std::size_t i = 0; i < W; ++i) {
        const std::uint32_t lw = words[i] << 16, hw = words[i] & 0xFFFF0000u;
        std::memcpy(&l[i], &lw, 4);
        std::memcpy(&h[i], &hw, 4);
      }
      lo = batch::load_aligned(l);
      hi = batch::load_aligned(h);
    }
  }
};

/// C[MR, NR] (+)= A[MR, kc] · panel[kc, NR]; A packed k-major in groups of
/// panel_rows (a[k · panel_rows + i]), C rows ldc apart. If `next` is set,
/// the tile also asks for the next panel block, one cache line per k step,
/// so the weights arrive from memory while this block computes.
template <class Isa, DType Stored, int MR>
void panel_tile(const float* a, const std::byte* panel, index_t kc, float* c, index_t ldc, bool accumulate,
                const std::byte* next) noexcept {
  using batch = floats<Isa>;
  constexpr index_t W = index_t(batch::size);
  batch c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    c0[i] = accumulate ? batch::load_unaligned(c + i * ldc) : batch(0.0f);
    c1[i] = accumulate ? batch::load_unaligned(c + i * ldc + W) : batch(0.0f);
  }
  constexpr index_t step_bytes = 2 * W * index_t(size_of(Stored));
  for (index_t k = 0; k < kc; ++k) {
    if (next && k * 64 < kc * step_bytes) __builtin_prefetch(next + k * 64);
    batch b0, b1;
    PanelStep<Isa, Stored>::load(panel, k, b0, b1);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const batch ai(a[k * panel_rows + i]);
      c0[i] = xsimd::fma(ai, b0, c0[i]);
      c1[i] = xsimd::fma(ai, b1, c1[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    c0[i].store_unaligned(c + i * ldc);
    c1[i].store_unaligned(c + i * ldc + W);
  }
}

/// Decode (one or two rows): P panels side by side, so 2·P·MR independent
/// FMA chains hide the FMA latency that a lone 1-row tile (2 chains) waits
/// on. Each output is still one chain over k in order: the same bits as
/// panel_tile gives it, whatever the batch.
template <class Isa, DType Stored, int MR, int P>
void panel_tile_wide(const float* a, const std::byte* panel, index_t panel_bytes, index_t kc, float* c, index_t ldc,
                     index_t NR, bool accumulate) noexcept {
  using batch = floats<Isa>;
  constexpr index_t W = index_t(batch::size);
  batch c0[P][MR], c1[P][MR];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 2
    for (int i = 0; i < MR; ++i) {
      c0[p][i] = accumulate ? batch::load_unaligned(c + i * ldc + p * NR) : batch(0.0f);
      c1[p][i] = accumulate ? batch::load_unaligned(c + i * ldc + p * NR + W) : batch(0.0f);
    }
  for (index_t k = 0; k < kc; ++k) {
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      batch b0, b1;
      PanelStep<Isa, Stored>::load(panel + p * panel_bytes, k, b0, b1);
#pragma GCC unroll 2
      for (int i = 0; i < MR; ++i) {
        const batch ai(a[k * panel_rows + i]);
        c0[p][i] = xsimd::fma(ai, b0, c0[p][i]);
        c1[p][i] = xsimd::fma(ai, b1, c1[p][i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 2
    for (int i = 0; i < MR; ++i) {
      c0[p][i].store_unaligned(c + i * ldc + p * NR);
      c1[p][i].store_unaligned(c + i * ldc + p * NR + W);
    }
}

/// Calls fn.template operator()<MR>() with MR = rows (1 … Max) as a
/// compile-time tile height: the last row group's smaller tile.
template <int Max, int MR = 1, class F>
void with_rows_upto(index_t rows, F&& fn) {
  if constexpr (MR < Max) {
    if (rows > MR) return with_rows_upto<Max, MR + 1>(rows, fn);
  }
  fn.template operator()<MR>();
}

/// with_rows_upto for the fp32 and bf16-pair tiles (1 … panel_rows rows).
template <class F>
void with_tile_rows(index_t rows, F&& fn) {
  with_rows_upto<panel_rows>(rows, fn);
}

/// The depth block for n rows: one row group (decode) streams whole panels.
inline index_t depth_block(index_t n, index_t K) noexcept {
  return n <= panel_rows ? K : std::min(K, panel_depth_block);
}

/// Where n rows of depth K sit in the buffer panel_gemm reads: depth blocks
/// of KC, and in each block groups of panel_rows rows stored k-major, so a
/// tile's broadcasts walk one contiguous stream. Element (i, k), with k0 the
/// start and kc the size of k's block and P the rows rounded up to groups:
///   k0·P + (i / MR)·kc·MR + (k − k0)·MR + i % MR
struct RowLayout {
  index_t rows = 0, depth = 0, block = 0, padded = 0;

  static RowLayout of(index_t n, index_t K) noexcept {
    return {n, K, depth_block(n, K), (n + panel_rows - 1) / panel_rows * panel_rows};
  }
  std::size_t size() const noexcept { return std::size_t(padded * depth); }
  index_t at(index_t i, index_t k) const noexcept {
    const index_t k0 = k / block * block, kc = std::min(block, depth - k0);
    return k0 * padded + (i / panel_rows) * kc * panel_rows + (k - k0) * panel_rows + i % panel_rows;
  }
};

/// v rounded to the nearest bf16 (ties to even), as an fp32.
inline float round_to_bf16(float v) noexcept {
  const std::uint32_t u = std::uint32_t(moe::bf16_bits(v)) << 16;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

/// Copies A [L.rows, L.depth] (rows lda apart) into layout L, each value
/// rounded to bf16 if `to_bf16` (numerics::Bf16Compute).
inline void pack_rows(const float* A, index_t lda, const RowLayout& L, float* dst, bool to_bf16 = false) noexcept {
  for (index_t k0 = 0; k0 < L.depth; k0 += L.block) {
    const index_t kc = std::min(L.block, L.depth - k0);
    for (index_t i = 0; i < L.rows; ++i) {
      const float* a = A + i * lda + k0;
      float* d = dst + L.at(i, k0);
      if (to_bf16)
        for (index_t k = 0; k < kc; ++k) d[k * panel_rows] = round_to_bf16(a[k]);
      else
        for (index_t k = 0; k < kc; ++k) d[k * panel_rows] = a[k];
    }
  }
}

/// C[n, count·NR] = A · panels [first, first + count) of B, for A's n rows
/// packed in layout L (pack_rows), C rows ldc apart (ldc ≥ count·NR). Rows
/// are taken MR at a time; the last group uses a smaller compile-time tile.
template <class Isa, DType Stored>
void panel_gemm(const float* A, const RowLayout& L, const PanelMatrix& B, index_t first, index_t count, float* C,
                index_t ldc) noexcept {
  const index_t NR = B.width, n = L.rows;
  if (n <= 2) {  // decode: four panels at a time (L.block is the whole depth here)
    constexpr index_t P = 4;
    const index_t panel_bytes = B.at(1, 0) - B.at(0, 0), kc = B.depth;
    index_t p = 0;
    for (; p + P <= count; p += P) {
      const std::byte* panel = B.at(first + p, 0);
      if (n == 1)
        panel_tile_wide<Isa, Stored, 1, P>(A, panel, panel_bytes, kc, C + p * NR, ldc, NR, false);
      else
        panel_tile_wide<Isa, Stored, 2, P>(A, panel, panel_bytes, kc, C + p * NR, ldc, NR, false);
    }
    for (; p < count; ++p) {
      const std::byte* panel = B.at(first + p, 0);
      if (n == 1)
        panel_tile<Isa, Stored, 1>(A, panel, kc, C + p * NR, ldc, false, nullptr);
      else
        panel_tile<Isa, Stored, 2>(A, panel, kc, C + p * NR, ldc, false, nullptr);
    }
    return;
  }
  for (index_t k0 = 0; k0 < B.depth; k0 += L.block) {
    const index_t kc = std::min(L.block, B.depth - k0);
    const bool accumulate = k0 > 0;
    for (index_t p = 0; p < count; ++p) {
      const std::byte* panel = B.at(first + p, k0);
      // The block after this one: the next panel, or the first panel's next depth block.
      const std::byte* next = p + 1 < count       ? B.at(first + p + 1, k0)
                              : k0 + kc < B.depth ? B.at(first, k0 + kc)
                                                  : nullptr;
      for (index_t i = 0; i < n; i += panel_rows) {
        const float* a = A + L.at(i, k0);
        float* c = C + i * ldc + p * NR;
        if (i > 0) next = nullptr;  // the first row group fetches it
        with_tile_rows(std::min<index_t>(panel_rows, n - i),
                       [&]<int MR>() { panel_tile<Isa, Stored, MR>(a, panel, kc, c, ldc, accumulate, next); });
      }
    }
  }
}

/// panel_gemm for B's stored dtype.
template <class Isa>
void panel_gemm(const float* A, const RowLayout& L, const PanelMatrix& B, index_t first, index_t count, float* C,
                index_t ldc) noexcept {
  if (B.dtype == DType::BF16)
    panel_gemm<Isa, DType::BF16>(A, L, B, first, count, C, ldc);
  else
    panel_gemm<Isa, DType::F32>(A, L, B, first, count, C, ldc);
}

}  // namespace moe::backend::cpu
