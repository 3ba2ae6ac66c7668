#pragma once
/// \file q8_dot.hpp
/// Integer dot products of block-quantised weight rows with activations
/// quantised per block (moe/quant/q8_activations.hpp, numerics::BlockQ8):
/// the kernels behind llama.cpp-style arithmetic on a GGUF's weights.
///
/// Every weight format's values become unsigned bytes u = q + offset
/// (offset 8 for Q4_0, 16 for Q5_0, 128 for Q8_0, 32 for Q6_K, 4 for Q3_K,
/// 0 where q is unsigned already), multiplied with the signed activation
/// bytes four at a time into int32 lanes (vpdpbusd on AVX512-VNNI, else
/// vpmaddubsw + vpmaddwd); the offset comes back out exactly through the
/// activations' sums per 16 values, Σ q·a = Σ u·a − offset · Σ a.
///
///   legacy (32-value blocks), 16 blocks at a time on AVX-512: the 16 weight
///     scales gathered into one vector, times the 16 activation scales; each
///     pair of blocks' int32 lanes converted and multiplied by its two
///     scales (vpermps picks them): one fused multiply-add per 64 values.
///   Q4_0 and Q4_1, four blocks at a time (nibble_rows): the activations
///     re-laid once per call so that each 32-bit lane holds one block's
///     values; the four blocks' nibbles, scales and minimums then come from
///     the weights' own words by two permutes, nothing gathered.
///   k-quants (256-value super-blocks): the sub-block scales multiply the
///     int16 pair sums (vpdpwssd), so a super-block's sum stays an exact
///     integer until one multiply by d_a · d_w; the minimums are the scales'
///     dot product with the activation sums.
///
/// Integer sums are exact; the per-block floats are those of the reference
/// (q8_dot) but added in another order, so results agree with it to a few
/// ulps of the sum of magnitudes (test-q8-dot). AVX2 decodes each 32-value
/// chunk with block_rows.hpp's quants() and applies scales per block;
/// other ISAs run the reference.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "moe/backend/cpu/block_rows.hpp"
#include "moe/backend/cpu/simd.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"
#include "moe/quant/q8_activations.hpp"

namespace moe::backend::cpu {

/// Rows of a Q8Rows from `first`: what a kernel tile reads, as pointers
/// and strides (no division in the kernels' loops).
struct Q8Tile {
  const std::int8_t* q_ = nullptr;
  const float *d_ = nullptr, *s_ = nullptr;
  const std::int16_t* sums_ = nullptr;
  index_t cols = 0, d_per_row = 0;

  Q8Tile(const quant::Q8Rows& rows, index_t first)
      : q_(rows.q.data() + first * rows.cols),
        d_(rows.d.data() + first * rows.blocks_per_row()),
        s_(rows.s.empty() ? nullptr : rows.s.data() + first * rows.cols / 32),
        sums_(rows.sums.data() + first * rows.cols / 16),
        cols(rows.cols),
        d_per_row(rows.blocks_per_row()) {}

  /// The tile `m` rows further on.
  Q8Tile from(index_t m) const noexcept {
    Q8Tile t = *this;
    t.q_ += m * cols;
    t.d_ += m * d_per_row;
    if (t.s_) t.s_ += m * cols / 32;
    t.sums_ += m * cols / 16;
    return t;
  }
  const std::int8_t* q(index_t i) const noexcept { return q_ + i * cols; }
  const float* d(index_t i) const noexcept { return d_ + i * d_per_row; }
  const float* s(index_t i) const noexcept { return s_ + i * (cols / 32); }
  const std::int16_t* sums(index_t i) const noexcept { return sums_ + i * (cols / 16); }
};

namespace q8 {

/// The reference for blocks [b0, b1) of one row: what the SIMD kernels
/// leave to it (a legacy row's last blocks short of 16; every block on
/// ISAs without kernels). Legacy minimums go to `mins`.
MOE_COLD inline void reference_blocks(DType f, const unsigned char* w, const Q8Tile& a, index_t i, index_t b0,
                                      index_t b1, float& sum, float& mins) noexcept {
  const index_t n = block_size(f);
  const std::int8_t* x = a.q(i);
  quant::BlockIntegers bi;
  for (index_t b = b0; b < b1; ++b) {
    quant::block_integers(f, w + b * size_of(f), bi);
    if (n == 32) {
      int dot = 0;
      for (int j = 0; j < 32; ++j) dot += bi.q[j] * x[b * 32 + j];
      sum += (bi.d * a.d(i)[b]) * float(dot);
      if (bi.has_min) mins += bi.m * a.s(i)[b];
      continue;
    }
    int dot = 0, min_dot = 0;
    for (int g = 0; g < 256 / bi.group; ++g) {
      int group_dot = 0, group_sum = 0;
      for (int j = g * bi.group; j < (g + 1) * bi.group; ++j) group_dot += bi.q[j] * x[b * 256 + j];
      for (int h = g * bi.group / 16; h < (g + 1) * bi.group / 16; ++h) group_sum += a.sums(i)[b * 16 + h];
      dot += bi.scale[g] * group_dot;
      min_dot += bi.min[g] * group_sum;
    }
    sum += (a.d(i)[b] * bi.d) * float(dot);
    if (bi.has_min) sum -= (a.d(i)[b] * bi.dmin) * float(min_dot);
  }
}

#if defined(__x86_64__) || defined(__i386__)

// ---------------------------------------------------------------------------
// AVX-512: the formats' values as unsigned bytes, 64 at a time.
// ---------------------------------------------------------------------------

/// Legacy formats: blocks b and b + 1 (at `b`, `bytes` apart) as 64
/// unsigned bytes in value order, u = q + offset; `d` at byte 0 of a block,
/// Q4_1/Q5_1's `m` at byte 2.
template <class Isa>
struct Q8_0x {
  static constexpr index_t bytes = 34;
  static constexpr int offset = 128;
  static constexpr bool has_m = false;
  static __m512i pair(const unsigned char* b) noexcept {
    const __m512i v =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2))),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + bytes + 2)), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(char(0x80)));
  }
};

/// 32 bytes at p in both halves (a broadcast load: no shuffle port, as
/// every unpacking below avoids cross-lane shuffles, the scarce ones).
template <class Isa>
inline __m512i broadcast32(const unsigned char* p) noexcept {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
template <class Isa>
inline __m512i broadcast16(const unsigned char* p) noexcept {
  return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

/// The 32 nibbles of blocks b and b + 1 (16 bytes each at b + at, b + bytes
/// + at) in value order: [low, high nibbles of b, low, high of b + 1].
template <class Isa, index_t Bytes, index_t At>
inline __m512i nibble_pair(const unsigned char* b) noexcept {
  const __m512i x = _mm512_mask_blend_epi64(0xF0, broadcast16<Isa>(b + At), broadcast16<Isa>(b + Bytes + At));
  return _mm512_and_si512(_mm512_mask_srli_epi16(x, 0xFF00FF00u, x, 4), _mm512_set1_epi8(0xF));  // 128-bit lanes 1, 3
}

/// The nibbles of blocks b … b + 3 in quad lane order: 32-bit lane l of
/// `low` holds block l % 4's values 4(l / 4) … 4(l / 4) + 3, of `high` its
/// values 16 + the same (what relayout_quads gives the activations). One
/// two-source word permute picks them from a load at the first block's
/// start (blocks 0–2) and a 16-byte load of the fourth block's nibbles:
/// every block's bytes start at an even offset, and nothing past the fourth
/// block is read.
template <class Isa, index_t Bytes, index_t At>
inline void nibble_quad(const unsigned char* b, __m512i first, __m512i& low, __m512i& high) noexcept {
  static_assert(At % 2 == 0 && Bytes % 2 == 0 && 2 * Bytes + At + 16 <= 64, "blocks whose nibbles sit on whole words");
  static constexpr std::array<short, 32> index = [] {
    std::array<short, 32> idx{};
    for (int w = 0; w < 32; ++w) {
      const int lane = w / 2, block = lane % 4, at = int(At) + 4 * (lane / 4) + 2 * (w % 2);  // byte in its block
      idx[std::size_t(w)] = short(block < 3 ? (block * int(Bytes) + at) / 2 : 32 + (at - int(At)) / 2);
    }
    return idx;
  }();
  const __m512i fourth = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 3 * Bytes + At)));
  const __m512i x = _mm512_permutex2var_epi16(first, _mm512_loadu_si512(index.data()), fourth);
  low = _mm512_and_si512(x, _mm512_set1_epi8(0xF));
  high = _mm512_and_si512(_mm512_srli_epi16(x, 4), _mm512_set1_epi8(0xF));
}

/// The fp16 word at byte `At` of blocks b … b + 3 (`first` loaded at b) as
/// 16 floats in quad lane order (lane l: block l % 4); with Four = false
/// only lanes 0–3, the rest zero.
template <class Isa, index_t Bytes, index_t At, bool Four = true>
inline __m512 quad_halves(__m512i first) noexcept {
  static constexpr std::array<short, 32> index = [] {
    std::array<short, 32> idx{};
    for (int w = 0; w < 32; ++w) idx[std::size_t(w)] = short(((w % 4) * int(Bytes) + int(At)) / 2);
    return idx;
  }();
  const __m512i words = _mm512_maskz_permutexvar_epi16(Four ? 0xFFFF : 0xF, _mm512_loadu_si512(index.data()), first);
  return _mm512_cvtph_ps(_mm512_castsi512_si256(words));
}

template <class Isa>
struct Q4_0x {
  static constexpr index_t bytes = 18;
  static constexpr int offset = 8;
  static constexpr bool has_m = false;
  static __m512i pair(const unsigned char* b) noexcept { return nibble_pair<Isa, bytes, 2>(b); }
  static constexpr index_t nibbles_at = 2;
};
template <class Isa>
struct Q4_1x {
  static constexpr index_t bytes = 20;
  static constexpr int offset = 0;
  static constexpr bool has_m = true;
  static __m512i pair(const unsigned char* b) noexcept { return nibble_pair<Isa, bytes, 4>(b); }
  static constexpr index_t nibbles_at = 4;
};
template <class Isa, bool One>
struct Q5x {
  static constexpr index_t bytes = One ? 24 : 22;
  static constexpr int offset = One ? 0 : 16;
  static constexpr bool has_m = One;
  static __m512i pair(const unsigned char* b) noexcept {
    constexpr index_t qh = One ? 4 : 2;
    const std::uint64_t fifth = quant::q5_high_bits(b + qh) | std::uint64_t(quant::q5_high_bits(b + bytes + qh)) << 32;
    return _mm512_or_si512(nibble_pair<Isa, bytes, qh + 4>(b), _mm512_maskz_mov_epi8(fifth, _mm512_set1_epi8(16)));
  }
};

/// k-quants: sub-block scales and minimums as 16 int16 (one per 16 values),
/// the super-block's d and dmin, and values [64p, 64p + 64) as unsigned bytes.
struct KScales {
  __m256i scale, min;
  float d, dmin;
};

/// Bits [shift, shift + width) of each byte, the 32 bytes at p taken twice:
/// at shift s0 for the low 32 results and s1 for the high 32.
template <class Isa>
inline __m512i two_fields(const unsigned char* p, int s0, int s1, int mask) noexcept {
  const __m512i x = broadcast32<Isa>(p);
  const __m512i shifts = _mm512_inserti64x4(_mm512_set1_epi16(short(s0)), _mm256_set1_epi16(short(s1)), 1);
  return _mm512_and_si512(_mm512_srlv_epi16(x, shifts), _mm512_set1_epi8(char(mask)));
}

/// Q4_K / Q5_K's 8 scales and 8 mins (6 bits each, packed in 12 bytes) as
/// bytes 0–7 and 8–15: scale j < 4 is q[j] & 63, min j < 4 q[j + 4] & 63;
/// for j ≥ 4 the low nibble (scale) or high nibble (min) of q[j + 4] under
/// the top two bits of q[j − 4] (scale) or q[j] (min). Reads 16 bytes.
template <class Isa>
inline __m128i k4_scale_bytes(const unsigned char* q) noexcept {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));  // 12 bytes and 4 of the values after
  const __m128i a = _mm_shuffle_epi8(x, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m128i low = _mm_or_si128(
      _mm_and_si128(a, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0)),
      _mm_and_si128(_mm_srli_epi16(a, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15)));
  const __m128i top = _mm_shuffle_epi8(x, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  return _mm_or_si128(low, _mm_srli_epi16(_mm_and_si128(top, _mm_set1_epi8(char(0xC0))), 2));
}

/// Each of 8 bytes twice, as 16 int16.
template <class Isa>
inline __m256i doubled(__m128i bytes8) noexcept {
  return _mm256_cvtepu8_epi16(_mm_shuffle_epi8(bytes8, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
}

template <class Isa, bool Fifth>
struct QK45x {
  static constexpr index_t bytes = Fifth ? 176 : 144;
  static constexpr int offset = 0;
  static constexpr bool has_min = true;
  static KScales scales(const unsigned char* b) noexcept {
    const __m128i sm = k4_scale_bytes<Isa>(b + 4);
    return {doubled<Isa>(sm), doubled<Isa>(_mm_srli_si128(sm, 8)), blocks::half<Isa>(b), blocks::half<Isa>(b + 2)};
  }
  static __m512i quants(const unsigned char* b, int p) noexcept {
    const __m512i x = broadcast32<Isa>(b + (Fifth ? 48 : 16) + 32 * p);
    __m512i u = _mm512_and_si512(_mm512_mask_srli_epi16(x, 0xFFFF0000u, x, 4), _mm512_set1_epi8(0xF));
    if constexpr (Fifth) u = _mm512_or_si512(u, _mm512_slli_epi16(two_fields<Isa>(b + 16, 2 * p, 2 * p + 1, 1), 4));
    return u;
  }
};

template <class Isa>
struct Q6_Kx {
  static constexpr index_t bytes = 210;
  static constexpr int offset = 32;
  static constexpr bool has_min = false;
  static KScales scales(const unsigned char* b) noexcept {
    return {_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192))), _mm256_setzero_si256(),
            blocks::half<Isa>(b + 208), 0.0f};
  }
  /// Values 128h + r for r in [64·odd, 64·odd + 64), p = 2h + odd: nibble
  /// `odd` of ql[64h + r % 64], bit pair r / 32 of qh[32h + r % 32].
  static __m512i quants(const unsigned char* b, int p) noexcept {
    const int h = p / 2, odd = p % 2;
    const __m512i l = _mm512_loadu_si512(b + 64 * h);
    const __m512i low = _mm512_and_si512(odd ? _mm512_srli_epi16(l, 4) : l, _mm512_set1_epi8(0xF));
    return _mm512_or_si512(low, _mm512_slli_epi16(two_fields<Isa>(b + 128 + 32 * h, 4 * odd, 4 * odd + 2, 3), 4));
  }
};

template <class Isa>
struct Q2_Kx {
  static constexpr index_t bytes = 84;
  static constexpr int offset = 0;
  static constexpr bool has_min = true;
  static KScales scales(const unsigned char* b) noexcept {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    const __m128i f = _mm_set1_epi8(0xF);
    return {_mm256_cvtepu8_epi16(_mm_and_si128(x, f)), _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(x, 4), f)),
            blocks::half<Isa>(b + 80), blocks::half<Isa>(b + 82)};
  }
  /// Value 128h + 32s + l is bits 2s of qs[32h + l]; p = 2h + s / 2.
  static __m512i quants(const unsigned char* b, int p) noexcept {
    return two_fields<Isa>(b + 16 + 32 * (p / 2), 4 * (p % 2), 4 * (p % 2) + 2, 3);
  }
};

template <class Isa>
struct Q3_Kx {
  static constexpr index_t bytes = 110;
  static constexpr int offset = 4;
  static constexpr bool has_min = false;
  static KScales scales(const unsigned char* b) noexcept {
    quant::BlockIntegers bi;
    quant::block_scales(DType::Q3_K, b, bi);
    alignas(32) std::int16_t s[16];
    for (int g = 0; g < 16; ++g) s[g] = std::int16_t(bi.scale[g]);
    return {_mm256_load_si256(reinterpret_cast<const __m256i*>(s)), _mm256_setzero_si256(), bi.d, 0.0f};
  }
  /// Q2_K's low bits at b + 32, plus 4 where mask bit e / 32 of hmask[e % 32] is set.
  static __m512i quants(const unsigned char* b, int p) noexcept {
    const __m512i low = two_fields<Isa>(b + 32 + 32 * (p / 2), 4 * (p % 2), 4 * (p % 2) + 2, 3);
    return _mm512_or_si512(low, _mm512_slli_epi16(two_fields<Isa>(b, 2 * p, 2 * p + 1, 1), 2));
  }
};

/// acc + Σ u·a over each lane's 4 bytes (u unsigned; without VNNI it must
/// be ≤ 128 so that vpmaddubsw's pair sums cannot saturate).
template <class Isa>
inline __m512i dot4(__m512i acc, __m512i u, __m512i a) noexcept {
  if constexpr (Isa::vnni)
    return _mm512_dpbusd_epi32(acc, u, a);
  else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, a), _mm512_set1_epi16(1)));
}

/// acc + Σ p·s over each lane's 2 int16.
template <class Isa>
inline __m512i dot2(__m512i acc, __m512i p, __m512i s) noexcept {
  if constexpr (Isa::vnni)
    return _mm512_dpwssd_epi32(acc, p, s);
  else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p, s));
}

/// Prefetches each cache line of [p, p + n) `prefetch_ahead` bytes on (a
/// mapped file's pages: see blocks::prefetch_ahead).
template <class Isa>
inline void prefetch_lines(const unsigned char* p, index_t n) noexcept {
  for (index_t o = 0; o < n; o += 64) __builtin_prefetch(p + o + blocks::prefetch_ahead);
}

/// C[i] = activation row i · weight row w for MR rows, a legacy format on
/// AVX-512: 16 blocks at a time, the reference for the rest.
template <class Isa, class F, int MR>
MOE_KERNEL void legacy_rows(DType f, const unsigned char* w, index_t K, const Q8Tile& a, float* c,
                            index_t ldc) noexcept {
  const index_t blocks = K / 32, groups = blocks / 16;
  // Two accumulators per row (even and odd pairs): the FMA's latency, not
  // its throughput, would bound a single chain.
  __m512 acc[MR], acc2[MR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) acc[i] = acc2[i] = _mm512_setzero_ps();
  const __m512i at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                        _mm512_set1_epi32(int(F::bytes)));
  for (index_t g = 0; g < groups; ++g) {
    const unsigned char* wb = w + g * 16 * F::bytes;
    prefetch_lines<Isa>(wb, 16 * F::bytes);
    const __m512i fields = _mm512_i32gather_epi32(at, wb, 1);  // d in the low half, m in the high
    const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(fields));
    // Each block's d_w · d_a, read back per pair by two broadcast loads:
    // cheaper than a cross-lane permute per pair.
    alignas(64) float scale[MR][16];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m512 both = _mm512_mul_ps(dw, _mm512_loadu_ps(a.d(i) + g * 16));
      _mm512_store_ps(scale[i], both);
      if constexpr (F::offset != 0 && !(F::offset == 128 && !Isa::vnni)) {
        // − offset · Σa of each block, times its scale.
        const __m512i sums = _mm512_madd_epi16(_mm512_loadu_si512(a.sums(i) + g * 32), _mm512_set1_epi16(1));
        acc[i] =
            _mm512_fmadd_ps(both, _mm512_cvtepi32_ps(_mm512_mullo_epi32(sums, _mm512_set1_epi32(-F::offset))), acc[i]);
      }
      if constexpr (F::has_m) {
        const __m512 m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(fields, 16)));
        acc[i] = _mm512_fmadd_ps(m, _mm512_loadu_ps(a.s(i) + g * 16), acc[i]);
      }
    }
    // Pair p's lanes: 8 of block 2p, then 8 of block 2p + 1.
    const auto pair = [&](int p, __m512* chain) {
      const __m512i u = F::pair(wb + 2 * p * F::bytes);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        const __m512i x = _mm512_loadu_si512(a.q(i) + g * 512 + 64 * p);
        __m512i s;
        if constexpr (F::offset == 128 && !Isa::vnni) {
          // Q8_0 without VNNI: |q| · (a with q's sign), as bytes of q ≤ 128 in magnitude.
          const __m512i q = _mm512_xor_si512(u, _mm512_set1_epi8(char(0x80)));
          const __m512i signed_x = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(q), _mm512_setzero_si512(), x);
          s = dot4<Isa>(_mm512_setzero_si512(), _mm512_abs_epi8(q), signed_x);
        } else {
          s = dot4<Isa>(_mm512_setzero_si512(), u, x);
        }
        const __m512 sp =
            _mm512_mask_broadcastss_ps(_mm512_set1_ps(scale[i][2 * p]), 0xFF00, _mm_load_ss(&scale[i][2 * p + 1]));
        chain[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sp, chain[i]);
      }
    };
#pragma GCC unroll 4
    for (int p = 0; p < 8; p += 2) {
      pair(p, acc);
      pair(p + 1, acc2);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    float rest = 0.0f, mins = 0.0f;
    if (groups * 16 < blocks) reference_blocks(f, w, a, i, groups * 16, blocks, rest, mins);
    c[i * ldc] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i], acc2[i])) + rest + mins;
  }
}

/// Activation rows re-laid for nibble_rows: per quad of blocks (128
/// values) 64 bytes whose 32-bit lane l holds block l % 4's values
/// 4(l / 4) … + 3, then 64 bytes with its values 16 + the same; and per
/// block −offset · Σa (the weights' offset taken out in the integer sums).
struct QuadRows {
  std::vector<std::int8_t> q;
  std::vector<std::int32_t> offset;
  index_t cols = 0;
  const std::int8_t* row(index_t i) const noexcept { return q.data() + i * cols; }
  const std::int32_t* offsets(index_t i) const noexcept { return offset.data() + i * (cols / 32); }
};

/// rows [0, m) of `a` into `out` (its buffers grown, then reused).
template <class Isa>
void relayout_quads(const Q8Tile& a, index_t m, int offset, QuadRows& out) {
  const index_t blocks = a.cols / 32, quads = blocks / 4;
  out.cols = a.cols;
  if (out.q.size() < std::size_t(m * a.cols)) out.q.resize(std::size_t(m * a.cols));
  if (out.offset.size() < std::size_t(m * blocks)) out.offset.resize(std::size_t(m * blocks));
  // Source 4-byte word of lane l: block l % 4's word l / 4 (low), 4 + l / 4 (high).
  const __m512i low = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
  const __m512i high = _mm512_add_epi32(low, _mm512_set1_epi32(4));
  for (index_t i = 0; i < m; ++i) {
    const std::int8_t* x = a.q(i);
    std::int8_t* q = out.q.data() + i * a.cols;
    for (index_t t = 0; t < quads; ++t) {
      const __m512i x01 = _mm512_loadu_si512(x + 128 * t), x23 = _mm512_loadu_si512(x + 128 * t + 64);
      _mm512_storeu_si512(q + 128 * t, _mm512_permutex2var_epi32(x01, low, x23));
      _mm512_storeu_si512(q + 128 * t + 64, _mm512_permutex2var_epi32(x01, high, x23));
    }
    const std::int16_t* sums = a.sums(i);
    for (index_t b = 0; b < blocks; ++b)
      out.offset[std::size_t(i * blocks + b)] = -offset * (int(sums[2 * b]) + int(sums[2 * b + 1]));
  }
}

/// C[i] = activation row i · weight row w for MR rows, Q4_0 or Q4_1 on
/// AVX-512, four blocks at a time: their nibbles, scales and minimums all
/// come from one load at the first block (and 16 bytes of the fourth), the
/// activations from relayout_quads, so that nothing is gathered or
/// shuffled per row but the weights' own words. The reference takes the
/// last blocks short of four.
template <class Isa, class F, int MR>
MOE_KERNEL void nibble_rows(DType f, const unsigned char* w, index_t K, const Q8Tile& a, const QuadRows& x, index_t x0,
                            float* c, index_t ldc) noexcept {
  const index_t blocks = K / 32, quads = blocks / 4;
  // Two accumulators per row (even and odd quads): the FMA's latency.
  __m512 acc[MR], acc2[MR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) acc[i] = acc2[i] = _mm512_setzero_ps();
  const auto quad = [&](index_t t, __m512* chain) {
    const unsigned char* wb = w + t * 4 * F::bytes;
    const __m512i first = _mm512_loadu_si512(wb);
    __m512i low, high;
    nibble_quad<Isa, F::bytes, F::nibbles_at>(wb, first, low, high);
    const __m512 dw = quad_halves<Isa, F::bytes, 0>(first);
    __m512 mw;
    if constexpr (F::has_m) mw = quad_halves<Isa, F::bytes, 2, false>(first);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const std::int8_t* q = x.row(x0 + i) + 128 * t;
      __m512i s = _mm512_setzero_si512();
      if constexpr (F::offset != 0)
        s = _mm512_maskz_broadcast_i32x4(0xF,
                                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.offsets(x0 + i) + 4 * t)));
      s = dot4<Isa>(dot4<Isa>(s, low, _mm512_loadu_si512(q)), high, _mm512_loadu_si512(q + 64));
      const __m512 da = _mm512_broadcast_f32x4(_mm_loadu_ps(a.d(i) + 4 * t));
      chain[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, da), chain[i]);
      if constexpr (F::has_m)
        chain[i] = _mm512_fmadd_ps(mw, _mm512_broadcast_f32x4(_mm_loadu_ps(a.s(i) + 4 * t)), chain[i]);
    }
  };
  index_t t = 0;
  for (; t + 2 <= quads; t += 2) {
    if (t % 8 == 0) prefetch_lines<Isa>(w + t * 4 * F::bytes, 32 * F::bytes);
    quad(t, acc);
    quad(t + 1, acc2);
  }
  if (t < quads) quad(t, acc);
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    float rest = 0.0f, mins = 0.0f;
    if (quads * 4 < blocks) reference_blocks(f, w, a, i, quads * 4, blocks, rest, mins);
    c[i * ldc] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i], acc2[i])) + rest + mins;
  }
}

/// The same for a k-quant: per super-block, Σ_g scale_g · (Σ u·a)_g in
/// int32 lanes (pair sums times the scales, vpdpwssd), the offset and the
/// minimums from the activation sums, one multiply by d_a · d_w.
template <class Isa, class F, int MR>
MOE_KERNEL void kquant_rows(const unsigned char* w, index_t K, const Q8Tile& a, float* c, index_t ldc) noexcept {
  __m512 acc[MR];
  __m256 mins[MR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps(), mins[i] = _mm256_setzero_ps();
  for (index_t sb = 0; sb < K / 256; ++sb) {
    const unsigned char* b = w + sb * F::bytes;
    prefetch_lines<Isa>(b, F::bytes);
    const KScales s = F::scales(b);
    // Pair-sum lane k of values [64p, 64p + 64) belongs to group 4p + k / 8.
    __m512i scale[4], u[4];
    for (int p = 0; p < 4; ++p) {
      const __m512i lanes = _mm512_add_epi16(
          _mm512_set1_epi16(short(4 * p)),
          _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)),
                             _mm256_setr_epi16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3), 1));
      scale[p] = _mm512_permutexvar_epi16(lanes, _mm512_castsi256_si512(s.scale));
      u[p] = F::quants(b, p);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const std::int8_t* x = a.q(i) + sb * 256;
      __m512i sum = _mm512_setzero_si512(), sum2 = _mm512_setzero_si512();  // two chains: latency
      for (int p = 0; p < 4; p += 2) {
        sum = dot2<Isa>(sum, _mm512_maddubs_epi16(u[p], _mm512_loadu_si512(x + 64 * p)), scale[p]);
        sum2 = dot2<Isa>(sum2, _mm512_maddubs_epi16(u[p + 1], _mm512_loadu_si512(x + 64 * p + 64)), scale[p + 1]);
      }
      sum = _mm512_add_epi32(sum, sum2);
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sums(i) + sb * 16));
      if constexpr (F::offset != 0) {
        const __m256i off = _mm256_mullo_epi32(_mm256_madd_epi16(s.scale, bsums), _mm256_set1_epi32(F::offset));
        sum = _mm512_sub_epi32(sum, _mm512_zextsi256_si512(off));
      }
      const float da = a.d(i)[sb];
      acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(da * s.d), _mm512_cvtepi32_ps(sum), acc[i]);
      if constexpr (F::has_min)
        mins[i] =
            _mm256_fmadd_ps(_mm256_set1_ps(da * s.dmin), _mm256_cvtepi32_ps(_mm256_madd_epi16(s.min, bsums)), mins[i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    const __m128 m = _mm_add_ps(_mm256_castps256_ps128(mins[i]), _mm256_extractf128_ps(mins[i], 1));
    const __m128 m2 = _mm_add_ps(m, _mm_movehl_ps(m, m));
    c[i * ldc] = _mm512_reduce_add_ps(acc[i]) - _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
  }
}

// ---------------------------------------------------------------------------
// AVX2: 32 values at a time, signed, through block_rows.hpp's decoding.
// ---------------------------------------------------------------------------

/// C[i] = activation row i · weight row w for MR rows: each chunk's 32
/// signed values (F::quants) times the activations as |q| · (a with q's
/// sign) in int16 pair sums, multiplied by the integer scales of its two
/// halves (vpmaddwd); legacy blocks scaled per block, k-quant super-blocks
/// summed in int32 first.
template <class Isa, class F, int MR>
MOE_KERNEL void avx2_rows(DType f, const unsigned char* w, index_t K, const Q8Tile& a, float* c, index_t ldc) noexcept {
  constexpr bool legacy = F::chunks == 1;
  __m256 acc[MR];
  float mins[MR] = {};
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
  quant::BlockIntegers bi;
  for (index_t blk = 0; blk < K / (32 * F::chunks); ++blk) {
    const unsigned char* b = w + blk * F::bytes;
    __builtin_prefetch(b + blocks::prefetch_ahead);
    quant::block_scales(f, b, bi);
    __m256i sum[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) sum[i] = _mm256_setzero_si256();
    for (index_t ch = 0; ch < F::chunks; ++ch) {
      __m128i q[2];
      F::template quants<Isa>(b, ch, q);
      const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q[0]), q[1], 1);
      const __m256i magnitude = _mm256_sign_epi8(v, v);
      // Scales of the chunk's two halves of 16 (groups of 16 or 32).
      const int g0 = int(ch * 32) / bi.group, g1 = int(ch * 32 + 16) / bi.group;
      const __m256i scales = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(short(bi.scale[g0]))),
                                                     _mm_set1_epi16(short(bi.scale[g1])), 1);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q(i) + blk * 32 * F::chunks + ch * 32));
        const __m256i pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(x, v));
        sum[i] = _mm256_add_epi32(sum[i], _mm256_madd_epi16(pairs, scales));
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      if constexpr (legacy) {
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(bi.d * a.d(i)[blk]), _mm256_cvtepi32_ps(sum[i]), acc[i]);
        if (bi.has_min) mins[i] += bi.m * a.s(i)[blk];
      } else {
        const float da = a.d(i)[blk];
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(da * bi.d), _mm256_cvtepi32_ps(sum[i]), acc[i]);
        if (bi.has_min) {
          int min_dot = 0;
          for (int h = 0; h < 16; ++h) min_dot += bi.min[h * 16 / bi.group] * a.sums(i)[blk * 16 + h];
          mins[i] -= (da * bi.dmin) * float(min_dot);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[i]), _mm256_extractf128_ps(acc[i], 1));
    const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
    c[i * ldc] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2))) + mins[i];
  }
}

/// Runs fn.template operator()<AVX-512 format>() for a block dtype.
template <class Isa, class Fn>
inline void with_avx512_format(DType d, Fn&& fn) {
  switch (d) {
    case DType::Q8_0:
      return fn.template operator()<Q8_0x<Isa>>();
    case DType::Q4_0:
      return fn.template operator()<Q4_0x<Isa>>();
    case DType::Q4_1:
      return fn.template operator()<Q4_1x<Isa>>();
    case DType::Q5_0:
      return fn.template operator()<Q5x<Isa, false>>();
    case DType::Q5_1:
      return fn.template operator()<Q5x<Isa, true>>();
    case DType::Q2_K:
      return fn.template operator()<Q2_Kx<Isa>>();
    case DType::Q3_K:
      return fn.template operator()<Q3_Kx<Isa>>();
    case DType::Q4_K:
      return fn.template operator()<QK45x<Isa, false>>();
    case DType::Q5_K:
      return fn.template operator()<QK45x<Isa, true>>();
    case DType::Q6_K:
      return fn.template operator()<Q6_Kx<Isa>>();
    default:
      return;
  }
}

#endif

/// Up to MR activation rows · one weight row, by the best kernel of the ISA.
template <class Isa, int MR>
void rows_dot(DType f, const unsigned char* w, index_t K, const Q8Tile& a, float* c, index_t ldc) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (Isa::avx512) {
    return with_avx512_format<Isa>(f, [&]<class F>() {
      if constexpr (requires { F::has_m; })
        legacy_rows<Isa, F, MR>(f, w, K, a, c, ldc);
      else
        kquant_rows<Isa, F, MR>(w, K, a, c, ldc);
    });
  } else if constexpr (Isa::avx2) {
    return blocks::with_format(f, [&]<class F>() { avx2_rows<Isa, F, MR>(f, w, K, a, c, ldc); });
  }
#endif
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    float sum = 0.0f, mins = 0.0f;
    reference_blocks(f, w, a, i, 0, K / block_size(f), sum, mins);
    c[i * ldc] = sum + mins;
  }
}

}  // namespace q8

namespace q8 {

/// dot.template operator()<MR>(weight row, first activation row, C there)
/// for each row of W in [r0, r0 + N) and each tile of up to four of the M
/// activation rows.
template <class Dot>
void row_tiles(index_t M, const WeightMatrix& w, index_t r0, index_t N, float* C, index_t ldc, Dot&& dot) {
  for (index_t n = 0; n < N; ++n) {
    const unsigned char* row = w.row_bytes(r0 + n);
    for (index_t m = 0; m < M; m += 4) {
      float* c = C + m * ldc + n;
      switch (std::min<index_t>(4, M - m)) {
        case 4:
          dot.template operator()<4>(row, m, c);
          break;
        case 3:
          dot.template operator()<3>(row, m, c);
          break;
        case 2:
          dot.template operator()<2>(row, m, c);
          break;
        default:
          dot.template operator()<1>(row, m, c);
      }
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
/// q8_gemm_nt for Q4_0 / Q4_1 on AVX-512: the activations re-laid once per
/// call (per thread's buffer, grown once), then nibble_rows.
template <class Isa, class F>
void nibble_gemm(const Q8Tile& A, index_t M, const WeightMatrix& w, index_t r0, index_t N, float* C, index_t ldc) {
  thread_local QuadRows x;
  relayout_quads<Isa>(A, M, F::offset, x);
  row_tiles(M, w, r0, N, C, ldc, [&]<int MR>(const unsigned char* row, index_t m, float* c) {
    nibble_rows<Isa, F, MR>(w.dtype, row, w.cols, A.from(m), x, m, c, ldc);
  });
}
#endif

}  // namespace q8

/// C[m, n] = A[m] · W[r0 + n] for m quantised activation rows (a tile of a
/// Q8Rows, quantised for W's format) and rows [r0, r0 + N) of a
/// block-quantised W: weight row by weight row, each decoded once per four
/// activation rows while it sits in L1.
template <class Isa>
void q8_gemm_nt(const Q8Tile& A, index_t M, const WeightMatrix& w, index_t r0, index_t N, float* C, index_t ldc) {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (Isa::avx512) {
    if (w.dtype == DType::Q4_0) return q8::nibble_gemm<Isa, q8::Q4_0x<Isa>>(A, M, w, r0, N, C, ldc);
    if (w.dtype == DType::Q4_1) return q8::nibble_gemm<Isa, q8::Q4_1x<Isa>>(A, M, w, r0, N, C, ldc);
  }
#endif
  q8::row_tiles(M, w, r0, N, C, ldc, [&]<int MR>(const unsigned char* row, index_t m, float* c) {
    q8::rows_dot<Isa, MR>(w.dtype, row, w.cols, A.from(m), c, ldc);
  });
}

}  // namespace moe::backend::cpu
