#pragma once
/// \file q8_panels.hpp
/// numerics::BlockQ8 for many rows (prefill): rows of a block-quantised W
/// turned, as each task runs, into int8 panels of 16 outputs (per 4 values
/// of depth, 64 bytes: output j's 4 unsigned bytes at 4j) with their scales
/// per group of the format, then multiplied by every activation row of the
/// task: vpdpbusd with the row's 4 bytes broadcast, 16 outputs a lane each.
///
/// What row_dot (q8_dot.hpp) does per row tile, this does once per task:
/// unpack the blocks (each weight once for all rows, where q8_dot unpacks it
/// once per four rows) and keep the scales as vectors over outputs, so a
/// group's int32 sums meet their scales in one multiply-add for 16 outputs.
///
///   per group g of G values (32 for the legacy types, Q4_K and Q5_K; 16
///   for Q2_K, Q3_K, Q6_K) of activation row i and output j:
///     sum  = Σ u·a − offset · Σa                      exact, int32
///     acc += (S[j, g] · d_a[i]) · sum                  S = d (legacy), d·scale (k-quants)
///     acc −= (M[j, g] · d_a[i]) · Σa                   M = dmin·min (Q2_K, Q4_K, Q5_K)
///     acc += M[j, b] · s_a[i, b]                       M = m, s from Q8_1 (Q4_1, Q5_1)
///
///   Q3_K and Q6_K (signed_panels) take the offset out on the weights'
///   side instead: panels of signed q, activations as a + 128, and per
///   super-block one vector Σ_g S[j, g] · 128 · Σq built with the panels.
///
/// The integers are q8_dot's; the floats differ from the reference only in
/// rounding (each group's scale applied to its own sum): test-gguf-model.
/// AVX-512 only; other ISAs run q8_gemm_nt for every row count.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "moe/backend/cpu/q8_dot.hpp"
#include "moe/backend/cpu/workspace.hpp"

namespace moe::backend::cpu {

/// Whether an ISA has the panel kernel.
template <class Isa>
inline constexpr bool has_q8_panels =
#if defined(__x86_64__) || defined(__i386__)
    Isa::avx512;
#else
    false;
#endif

/// Whether the panel kernel takes W: whole 64-value chunks per row, and
/// without VNNI no Q8_0 (its bytes + 128 would saturate vpmaddubsw's pairs).
template <class Isa>
inline bool q8_panels_take(const WeightMatrix& w) noexcept {
  return has_q8_panels<Isa> && is_block_quantised(w.dtype) && w.cols % 64 == 0 && (Isa::vnni || w.dtype != DType::Q8_0);
}

#if defined(__x86_64__) || defined(__i386__)

namespace q8 {

/// One task's panels: `count` panels of 16 outputs over the whole depth K.
struct Panels {
  index_t K = 0, count = 0, group = 32, groups = 0;  ///< groups per panel: K / group
  unsigned char* bytes = nullptr;                    ///< count · K/4 · 64
  float *scale = nullptr, *min = nullptr;            ///< count · groups · 16 each
  float* shift = nullptr;                            ///< k-quants with an offset: count · K/256 · 16 (signed_panels)

  const unsigned char* panel(index_t p) const noexcept { return bytes + p * K * 16; }
  const float* scales(index_t p) const noexcept { return scale + p * groups * 16; }
  const float* mins(index_t p) const noexcept { return min + p * groups * 16; }
  const float* shifts(index_t p) const noexcept { return shift + p * (K / 256) * 16; }
};

/// Whether a format's panels hold signed values: the k-quants whose values
/// carry an offset (Q3_K's 4, Q6_K's 32). Their tiles take the activations
/// as unsigned bytes a + 128 instead, so that Σ q·a = Σ q·(a + 128) − 128·Σq,
/// and the last term, which depends only on the weights, is summed with
/// the groups' scales into one vector per super-block when the panels are
/// built (Panels::shift): the tile then needs no activation sums and no
/// correction per group.
inline bool signed_panels(DType f) noexcept { return f == DType::Q3_K || f == DType::Q6_K; }

/// The scale group of a format: 16 where its sub-blocks are 16 values.
inline index_t scale_group(DType f) noexcept {
  return f == DType::Q2_K || f == DType::Q3_K || f == DType::Q6_K ? 16 : 32;
}

/// Rows [r0, r0 + 16·count) of W (past its last row: zeros) as panels in
/// the buffers (grown): unsigned bytes from the formats' AVX-512 unpacking,
/// 16 rows × 64 values at a time turned k-major by a 16 × 16 transpose of
/// their 4-byte groups; scales and minimums from block_scales.
template <class Isa>
Panels build_panels(const WeightMatrix& w, index_t r0, index_t count, std::vector<std::uint8_t>& bytes,
                    std::vector<float>& floats) {
  Panels P;
  P.K = w.cols;
  P.count = count;
  P.group = scale_group(w.dtype);
  P.groups = w.cols / P.group;
  P.bytes = reinterpret_cast<unsigned char*>(grow(bytes, std::size_t(count * w.cols * 16 + 64)));
  P.bytes += (64 - reinterpret_cast<std::uintptr_t>(P.bytes) % 64) % 64;
  const bool shifted = signed_panels(w.dtype);
  P.scale = grow(floats, std::size_t(2 * count * P.groups * 16 + (shifted ? count * (w.cols / 256) * 16 : 0)));
  P.min = P.scale + count * P.groups * 16;
  if (shifted) P.shift = P.min + count * P.groups * 16;
  const index_t n = block_size(w.dtype), per_block = n / P.group;
  with_avx512_format<Isa>(w.dtype, [&]<class F>() {
    alignas(64) std::uint32_t rows[16][16];  // 16 rows × 64 bytes
    for (index_t p = 0; p < count; ++p) {
      unsigned char* out = P.bytes + p * w.cols * 16;
      float *S = P.scale + p * P.groups * 16, *M = P.min + p * P.groups * 16;
      for (int j = 0; j < 16; ++j) {
        const index_t row = r0 + p * 16 + j;
        if (row >= w.rows) {
          for (index_t g = 0; g < P.groups; ++g) S[g * 16 + j] = M[g * 16 + j] = 0.0f;
          continue;
        }
        const unsigned char* b = w.row_bytes(row);
        for (index_t blk = 0; blk < w.cols / n; ++blk) {
          const unsigned char* block = b + blk * F::bytes;
          // The panel's rows are one run of bytes, which this loop is the
          // first to touch (its scales, a line per block): every line of it
          // asked for ahead, so that the quants' pass below finds them in
          // cache and this one does not wait on each block.
          prefetch_lines<Isa>(block, F::bytes);
          if constexpr (requires { F::has_m; }) {  // legacy: d, and m, at the block's start
            S[blk * 16 + j] = blocks::half<Isa>(block);
            M[blk * 16 + j] = F::has_m ? blocks::half<Isa>(block + 2) : 0.0f;
          } else {
            // k-quants: d · scale and dmin · min per group (exact: an fp16
            // times a 6-bit or int8 integer), from the format's 16 int16 per
            // 16 values (groups of 32 take every other).
            const KScales ks = F::scales(block);
            alignas(64) float sc[16], mn[16];
            _mm512_store_ps(sc,
                            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(ks.scale)), _mm512_set1_ps(ks.d)));
            _mm512_store_ps(mn,
                            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(ks.min)), _mm512_set1_ps(ks.dmin)));
            const index_t step = 16 / per_block;
            for (index_t g = 0; g < per_block; ++g) {
              const index_t at = (blk * per_block + g) * 16 + j;
              S[at] = sc[g * step];
              M[at] = mn[g * step];
            }
          }
        }
      }
      for (index_t k = 0; k < w.cols; k += 64) {
        for (int j = 0; j < 16; ++j) {
          const index_t row = r0 + p * 16 + j;
          __m512i u = _mm512_setzero_si512();
          if (row < w.rows) {
            const unsigned char* b = w.row_bytes(row);
            if constexpr (requires { F::has_m; })
              u = F::pair(b + k / 32 * F::bytes);
            else
              u = F::quants(b + k / 256 * F::bytes, int(k % 256 / 64));
            if (shifted) u = _mm512_sub_epi8(u, _mm512_set1_epi8(char(F::offset)));
          }
          _mm512_store_si512(rows[j], u);
        }
        blocks::transpose16<Isa>(reinterpret_cast<const float*>(&rows[0][0]), 16,
                                 reinterpret_cast<float*>(out + k * 16), 16);
      }
      if (shifted) {
        // Per super-block and output: Σ_g scale_g · 128 · Σ_{group g} q.
        for (index_t sb = 0; sb < w.cols / 256; ++sb) {
          __m512 c = _mm512_setzero_ps();
          for (index_t g = sb * (256 / P.group); g < (sb + 1) * (256 / P.group); ++g) {
            __m512i q = _mm512_setzero_si512();
            for (index_t k = g * P.group; k < (g + 1) * P.group; k += 4)
              q = dot4<Isa>(q, _mm512_set1_epi8(1), _mm512_load_si512(out + k * 16));
            c = _mm512_fmadd_ps(_mm512_loadu_ps(S + g * 16), _mm512_cvtepi32_ps(_mm512_slli_epi32(q, 7)), c);
          }
          _mm512_storeu_ps(P.shift + (p * (w.cols / 256) + sb) * 16, c);
        }
      }
    }
  });
  return P;
}

/// The int32 sums of one scale group (G values) for MR rows × NR panels:
/// per 4 values, the NR panel vectors loaded once and each row's 4 bytes
/// broadcast into vpdpbusd (Shifted: the bytes + 128 as the unsigned side,
/// the signed panels as the other; see signed_panels).
template <class Isa, int MR, int NR, int G, bool Shifted = false>
inline void group_sums(const Q8Tile& a, const Panels& P, index_t p0, index_t k0, __m512i (&sum)[MR][NR]) noexcept {
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) sum[i][r] = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (index_t k = k0; k < k0 + G; k += 4) {
    __m512i w[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) w[r] = _mm512_load_si512(P.panel(p0 + r) + k * 16);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      std::uint32_t four;
      std::memcpy(&four, a.q(i) + k, 4);
      if constexpr (Shifted) four ^= 0x80808080u;  // a + 128 in each byte
      const __m512i x = _mm512_set1_epi32(std::int32_t(four));
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) sum[i][r] = Shifted ? dot4<Isa>(sum[i][r], x, w[r]) : dot4<Isa>(sum[i][r], w[r], x);
    }
  }
}

/// Σa of rows [0, MR) over values [k0, k0 + G), from the 16-value sums.
template <int MR, int G>
inline void group_activation_sums(const Q8Tile& a, index_t k0, int (&out)[MR]) noexcept {
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    int s = 0;
    for (index_t h = k0 / 16; h < (k0 + G) / 16; ++h) s += a.sums(i)[h];
    out[i] = s;
  }
}

/// C[i, 0..16·NR) = rows [0, MR) of the activations times NR panels, a
/// legacy format (G = 32, one activation scale per group).
template <class Isa, int MR, int NR, int Offset, bool HasM>
void legacy_panel_tile(const Q8Tile& a, const Panels& P, index_t p0, float* C, index_t ldc) noexcept {
  __m512 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_ps();
  for (index_t g = 0; g < P.groups; ++g) {
    __m512i sum[MR][NR];
    group_sums<Isa, MR, NR, 32>(a, P, p0, g * 32, sum);
    int asum[MR];
    if constexpr (Offset != 0) group_activation_sums<MR, 32>(a, g * 32, asum);
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      const __m512 S = _mm512_loadu_ps(P.scales(p0 + r) + g * 16);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        __m512i s = sum[i][r];
        if constexpr (Offset != 0) s = _mm512_sub_epi32(s, _mm512_set1_epi32(Offset * asum[i]));
        acc[i][r] = _mm512_fmadd_ps(_mm512_mul_ps(S, _mm512_set1_ps(a.d(i)[g])), _mm512_cvtepi32_ps(s), acc[i][r]);
        if constexpr (HasM)
          acc[i][r] = _mm512_fmadd_ps(_mm512_loadu_ps(P.mins(p0 + r) + g * 16), _mm512_set1_ps(a.s(i)[g]), acc[i][r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) _mm512_storeu_ps(C + i * ldc + 16 * r, acc[i][r]);
}

/// The same for a k-quant (groups of G in super-blocks of 256): a
/// super-block's groups summed with their weight scales (and minimums)
/// first, then one multiply by the activation's super-block scale.
template <class Isa, int MR, int NR, int G, int Offset, bool KMin>
void kquant_panel_tile(const Q8Tile& a, const Panels& P, index_t p0, float* C, index_t ldc) noexcept {
  __m512 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_ps();
  for (index_t sb = 0; sb < P.K / 256; ++sb) {
    __m512 part[MR][NR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) part[i][r] = _mm512_setzero_ps();
    // With an offset the panels are signed and the activations shifted
    // (signed_panels): no activation sums, one correction per super-block.
    constexpr bool shifted = Offset != 0;
    for (index_t g = sb * (256 / G); g < (sb + 1) * (256 / G); ++g) {
      __m512i sum[MR][NR];
      group_sums<Isa, MR, NR, G, shifted>(a, P, p0, g * G, sum);
      int asum[MR];
      if constexpr (KMin) group_activation_sums<MR, G>(a, g * G, asum);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const __m512 S = _mm512_loadu_ps(P.scales(p0 + r) + g * 16);
        __m512 M;
        if constexpr (KMin) M = _mm512_loadu_ps(P.mins(p0 + r) + g * 16);
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) {
          part[i][r] = _mm512_fmadd_ps(S, _mm512_cvtepi32_ps(sum[i][r]), part[i][r]);
          if constexpr (KMin) part[i][r] = _mm512_fnmadd_ps(M, _mm512_set1_ps(float(asum[i])), part[i][r]);
        }
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m512 d = _mm512_set1_ps(a.d(i)[sb]);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        __m512 p = part[i][r];
        if constexpr (shifted) p = _mm512_sub_ps(p, _mm512_loadu_ps(P.shifts(p0 + r) + sb * 16));
        acc[i][r] = _mm512_fmadd_ps(p, d, acc[i][r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) _mm512_storeu_ps(C + i * ldc + 16 * r, acc[i][r]);
}

/// The tile kernel of format f: fn.template operator()<kernel<MR, NR>>.
template <class Isa, int MR, int NR>
inline void panel_tile(DType f, const Q8Tile& a, const Panels& P, index_t p0, float* C, index_t ldc) noexcept {
  switch (f) {
    case DType::Q8_0:
      return legacy_panel_tile<Isa, MR, NR, 128, false>(a, P, p0, C, ldc);
    case DType::Q4_0:
      return legacy_panel_tile<Isa, MR, NR, 8, false>(a, P, p0, C, ldc);
    case DType::Q5_0:
      return legacy_panel_tile<Isa, MR, NR, 16, false>(a, P, p0, C, ldc);
    case DType::Q4_1:
    case DType::Q5_1:
      return legacy_panel_tile<Isa, MR, NR, 0, true>(a, P, p0, C, ldc);
    case DType::Q4_K:
    case DType::Q5_K:
      return kquant_panel_tile<Isa, MR, NR, 32, 0, true>(a, P, p0, C, ldc);
    case DType::Q2_K:
      return kquant_panel_tile<Isa, MR, NR, 16, 0, true>(a, P, p0, C, ldc);
    case DType::Q3_K:
      return kquant_panel_tile<Isa, MR, NR, 16, 4, false>(a, P, p0, C, ldc);
    case DType::Q6_K:
      return kquant_panel_tile<Isa, MR, NR, 16, 32, false>(a, P, p0, C, ldc);
    default:
      return;
  }
}

}  // namespace q8

/// C[m, n] = A[m] · W[r0 + n] for M ≥ 1 activation rows and N ≤ 16·panels
/// outputs: the panels of rows [r0, r0 + N) built into the buffers, then
/// tiles of 4 rows × 32 outputs (C's last columns written through a
/// scratch tile when N is not whole panels).
template <class Isa>
void q8_panel_gemm(const Q8Tile& A, index_t M, const WeightMatrix& w, index_t r0, index_t N, float* C, index_t ldc,
                   std::vector<std::uint8_t>& bytes, std::vector<float>& floats) {
  const index_t panels = (N + 15) / 16;
  const q8::Panels P = q8::build_panels<Isa>(w, r0, panels, bytes, floats);
  alignas(64) float tile[4 * 32];
  for (index_t m = 0; m < M; m += 4) {
    const index_t mr = std::min<index_t>(4, M - m);
    const Q8Tile a = A.from(m);
    for (index_t p = 0; p < panels; p += 2) {
      const int nr = p + 1 < panels ? 2 : 1;
      const index_t n0 = p * 16, nn = std::min<index_t>(16 * nr, N - n0);
      const bool whole = nn == 16 * nr;
      float* c = whole ? C + m * ldc + n0 : tile;
      const index_t ld = whole ? ldc : 32;
      const auto tile_of = [&]<int MR>() {
        if (nr == 2)
          q8::panel_tile<Isa, MR, 2>(w.dtype, a, P, p, c, ld);
        else
          q8::panel_tile<Isa, MR, 1>(w.dtype, a, P, p, c, ld);
      };
      switch (mr) {
        case 4:
          tile_of.template operator()<4>();
          break;
        case 3:
          tile_of.template operator()<3>();
          break;
        case 2:
          tile_of.template operator()<2>();
          break;
        default:
          tile_of.template operator()<1>();
      }
      if (!whole)
        for (index_t i = 0; i < mr; ++i) std::copy(tile + i * 32, tile + i * 32 + nn, C + (m + i) * ldc + n0);
    }
  }
}

#else

template <class Isa>
void q8_panel_gemm(const Q8Tile&, index_t, const WeightMatrix&, index_t, index_t, float*, index_t,
                   std::vector<std::uint8_t>&, std::vector<float>&) {
  static_assert(has_q8_panels<Isa>, "the q8 panel kernel is x86 AVX-512 only");
}

#endif

}  // namespace moe::backend::cpu
