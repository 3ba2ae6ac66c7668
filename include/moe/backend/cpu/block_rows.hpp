#pragma once
/// \file block_rows.hpp
/// Rows of block-quantised weights (ggml's formats, moe/quant/block_formats.hpp)
/// read 32 values at a time into SIMD vectors, dequantised in registers,
/// and the dot-product kernel that streams them: the decode path over a
/// GGUF's weights, where a dequantised copy would cost more memory traffic
/// than the arithmetic. AVX2 and AVX-512 (x86); other ISAs widen rows with
/// the reference dequantisation instead.
///
/// Every format comes down to one shape, a chunk of 32 values: 32 small
/// signed integers q and, for each half of 16, a multiplier and an addend,
///
///   y = round(mul · q) + add
///
///   Q8_0        q as stored, mul = d
///   Q4_0, Q5_0  nibble (| fifth bit << 4) − 8 (16), mul = d
///   Q4_1, Q5_1  nibble (| fifth bit << 4), mul = d, add = m
///   Q4_K, Q5_K  a sub-block of 32: mul = d · scale, add = −dmin · min
///   Q2_K        a sub-block pair of 16: mul = d · scale, add = −dmin · min
///   Q3_K, Q6_K  a sub-block pair of 16: mul = d · scale, q re-centred
///
/// with mul and add computed in fp32 as the reference computes them, so the
/// values are the reference dequantisation's, bit for bit (the product is
/// rounded before the add, as there: no fused multiply-add).

#include <concepts>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "moe/backend/cpu/panel_gemm.hpp"
#include "moe/backend/cpu/simd.hpp"
#include "moe/backend/cpu/workspace.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"
#include "moe/quant/block_formats.hpp"

namespace moe::backend::cpu {

/// Whether an ISA has the block kernels (x86 with AVX2 or AVX-512).
template <class Isa>
inline constexpr bool has_block_kernels =
#if defined(__x86_64__) || defined(__i386__)
    Isa::avx2;
#else
    false;
#endif

#if defined(__x86_64__) || defined(__i386__)

namespace blocks {

/// A block's multipliers and addends, one pair per 16 values (the k-quants
/// have up to 16 sub-blocks; the legacy formats one scale for all 32).
struct Scales {
  float mul[16];
  float add[16];
};

/// fp16 bits to fp32 (exact): vcvtph2ps where AVX-512 has it, else the reference's.
template <class Isa>
inline float half(const unsigned char* p) noexcept {
  if constexpr (Isa::avx512) {
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm512_castps512_ps128(_mm512_cvtph_ps(_mm256_castsi128_si256(_mm_cvtsi32_si128(h)))));
  } else {
    return quant::detail::half_at(p);
  }
}

/// The 16 low and 16 high nibbles of 16 bytes.
template <class Isa>
inline void nibbles(const unsigned char* p, __m128i* q) noexcept {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), m = _mm_set1_epi8(0xF);
  q[0] = _mm_and_si128(x, m);
  q[1] = _mm_and_si128(_mm_srli_epi16(x, 4), m);
}

/// Byte j = 16 where bit j of the 16 bits is set, else 0 (Q5's fifth bits).
template <class Isa>
inline __m128i bit_bytes16(std::uint32_t bits) noexcept {
  const __m128i spread = _mm_shuffle_epi8(_mm_set1_epi16(std::int16_t(bits & 0xFFFF)),
                                          _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  const __m128i select = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(spread, select), select), _mm_set1_epi8(16));
}

/// Bits [shift, shift + width) of each of 16 bytes.
template <class Isa>
inline __m128i bit_field(const unsigned char* p, int shift, int mask) noexcept {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm_and_si128(_mm_srl_epi16(x, _mm_cvtsi32_si128(shift)), _mm_set1_epi8(char(mask)));
}

inline void one_scale(Scales& s, float mul, float add = 0.0f) noexcept {
  s.mul[0] = s.mul[1] = mul;
  s.add[0] = s.add[1] = add;
}

/// The formats: block bytes and values, whether an addend exists;
/// scales(block) the multipliers and addends of its halves of 16 values,
/// quants(block, c, q) chunk c's 32 integers.
struct Q8_0 {
  static constexpr index_t bytes = 34, chunks = 1;
  static constexpr bool adds = false;
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    one_scale(s, half<Isa>(b));
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t, __m128i* q) noexcept {
    q[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    q[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
  }
};
struct Q4_0 {
  static constexpr index_t bytes = 18, chunks = 1;
  static constexpr bool adds = false;
  /// Nibble formats: half h of chunk c is the nibbles at `shift` of the 16
  /// bytes at nibble_bytes(b, c, h), each minus `offset`.
  static constexpr int nibble_offset = 8;
  static const unsigned char* nibble_bytes(const unsigned char* b, index_t, int) noexcept { return b + 2; }
  static int nibble_shift(index_t, int h) noexcept { return 4 * h; }
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    one_scale(s, half<Isa>(b));
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t, __m128i* q) noexcept {
    nibbles<Isa>(b + 2, q);
    const __m128i eight = _mm_set1_epi8(8);
    q[0] = _mm_sub_epi8(q[0], eight);
    q[1] = _mm_sub_epi8(q[1], eight);
  }
};
struct Q4_1 {
  static constexpr index_t bytes = 20, chunks = 1;
  static constexpr bool adds = true;
  static constexpr int nibble_offset = 0;
  static const unsigned char* nibble_bytes(const unsigned char* b, index_t, int) noexcept { return b + 4; }
  static int nibble_shift(index_t, int h) noexcept { return 4 * h; }
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    one_scale(s, half<Isa>(b), half<Isa>(b + 2));
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t, __m128i* q) noexcept {
    nibbles<Isa>(b + 4, q);
  }
};
template <bool Min>
struct Q5 {
  static constexpr index_t bytes = Min ? 24 : 22, chunks = 1;
  static constexpr bool adds = Min;
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    one_scale(s, half<Isa>(b), Min ? half<Isa>(b + 2) : 0.0f);
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t, __m128i* q) noexcept {
    const std::uint32_t qh = quant::q5_high_bits(b + (Min ? 4 : 2));
    nibbles<Isa>(b + (Min ? 8 : 6), q);
    q[0] = _mm_or_si128(q[0], bit_bytes16<Isa>(qh));
    q[1] = _mm_or_si128(q[1], bit_bytes16<Isa>(qh >> 16));
    if constexpr (!Min) {
      const __m128i sixteen = _mm_set1_epi8(16);
      q[0] = _mm_sub_epi8(q[0], sixteen);
      q[1] = _mm_sub_epi8(q[1], sixteen);
    }
  }
};
using Q5_0 = Q5<false>;
using Q5_1 = Q5<true>;

/// Q4_K and Q5_K: sub-block c of 32 is nibble c % 2 of bytes 32·(c / 2) …,
/// (Q5_K) with bit c of qh[l] as its fifth.
template <bool Fifth>
struct QK45 {
  static constexpr index_t bytes = Fifth ? 176 : 144, chunks = 8;
  static constexpr bool adds = true;
  static constexpr int nibble_offset = 0;
  static const unsigned char* nibble_bytes(const unsigned char* b, index_t c, int h) noexcept
      requires(!Fifth)  // Q4_K only: Q5_K's fifth bits take the general path
  {
    return b + 16 + 32 * (c / 2) + 16 * h;
  }
  static int nibble_shift(index_t c, int) noexcept { return 4 * int(c % 2); }
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    const float d = half<Isa>(b), dmin = half<Isa>(b + 2);
    for (int j = 0; j < 8; ++j) {
      int scale = 0, min = 0;
      quant::detail::scale_min_k4(j, b + 4, scale, min);
      s.mul[2 * j] = s.mul[2 * j + 1] = d * float(scale);
      s.add[2 * j] = s.add[2 * j + 1] = -(dmin * float(min));
    }
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t c, __m128i* q) noexcept {
    const unsigned char* qs = b + (Fifth ? 48 : 16) + 32 * (c / 2);
    const int shift = 4 * int(c % 2);
    q[0] = bit_field<Isa>(qs, shift, 0xF);
    q[1] = bit_field<Isa>(qs + 16, shift, 0xF);
    if constexpr (Fifth) {
      const unsigned char* qh = b + 16;
      q[0] = _mm_or_si128(q[0], _mm_slli_epi16(bit_field<Isa>(qh, int(c), 1), 4));
      q[1] = _mm_or_si128(q[1], _mm_slli_epi16(bit_field<Isa>(qh + 16, int(c), 1), 4));
    }
  }
};
using Q4_K = QK45<false>;
using Q5_K = QK45<true>;

/// Q6_K: chunk c = (h = c / 4, t = c % 4): nibble t / 2 of ql[64h + 32(t % 2) + l],
/// pair t of qh[32h + l]; a scale per 16 values.
struct Q6_K {
  static constexpr index_t bytes = 210, chunks = 8;
  static constexpr bool adds = false;
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    const float d = half<Isa>(b + 208);
    const auto* sc = reinterpret_cast<const std::int8_t*>(b + 192);
    for (int g = 0; g < 16; ++g) {
      s.mul[g] = d * float(sc[g]);
      s.add[g] = 0.0f;
    }
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t c, __m128i* q) noexcept {
    const index_t h = c / 4, t = c % 4;
    const unsigned char *ql = b + 64 * h + 32 * (t % 2), *qh = b + 128 + 32 * h;
    const __m128i thirty_two = _mm_set1_epi8(32);
    for (int i = 0; i < 2; ++i) {
      const __m128i low = bit_field<Isa>(ql + 16 * i, 4 * int(t / 2), 0xF);
      const __m128i high = _mm_slli_epi16(bit_field<Isa>(qh + 16 * i, 2 * int(t), 3), 4);
      q[i] = _mm_sub_epi8(_mm_or_si128(low, high), thirty_two);
    }
  }
};

/// Q2_K: chunk c = (h = c / 4, s = c % 4): bits 2s of qs[32h + l]; a scale
/// (low nibble) and min (high nibble) byte per 16 values.
struct Q2_K {
  static constexpr index_t bytes = 84, chunks = 8;
  static constexpr bool adds = true;
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    const float d = half<Isa>(b + 80), dmin = half<Isa>(b + 82);
    for (int g = 0; g < 16; ++g) {
      s.mul[g] = d * float(b[g] & 0xF);
      s.add[g] = -(dmin * float(b[g] >> 4));
    }
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t c, __m128i* q) noexcept {
    const unsigned char* qs = b + 16 + 32 * (c / 4);
    for (int i = 0; i < 2; ++i) q[i] = bit_field<Isa>(qs + 16 * i, 2 * int(c % 4), 3);
  }
};

/// Q3_K: Q2_K's low bits, minus 4 where mask bit c of hmask[l] is clear;
/// a signed 6-bit scale per 16 values.
struct Q3_K {
  static constexpr index_t bytes = 110, chunks = 8;
  static constexpr bool adds = false;
  template <class Isa>
  static void scales(const unsigned char* b, Scales& s) noexcept {
    const unsigned char* sc = b + 96;
    const float d = half<Isa>(b + 108);
    for (int k = 0; k < 16; ++k) {
      const int scale = (((sc[k % 8] >> (4 * (k / 8))) & 0xF) | ((sc[8 + k % 4] >> (2 * (k / 4))) & 3) << 4) - 32;
      s.mul[k] = d * float(scale);
      s.add[k] = 0.0f;
    }
  }
  template <class Isa>
  static void quants(const unsigned char* b, index_t c, __m128i* q) noexcept {
    const unsigned char* qs = b + 32 + 32 * (c / 4);
    for (int i = 0; i < 2; ++i) {
      const __m128i low = bit_field<Isa>(qs + 16 * i, 2 * int(c % 4), 3);
      const __m128i set = _mm_slli_epi16(bit_field<Isa>(b + 16 * i, int(c), 1), 2);  // 4 where the bit is set
      q[i] = _mm_sub_epi8(_mm_add_epi8(low, set), _mm_set1_epi8(4));
    }
  }
};

/// A product the compiler must round before anything adds to it.
template <class V>
inline V kept(V v) noexcept {
  __asm__("" : "+v"(v));
  return v;
}

/// A chunk's 32 values, y = round(mul · q) + add per half of 16, as 32 / W
/// vectors of the ISA; mul and add point at the chunk's two halves.
template <class Isa, bool Adds>
inline void values(const __m128i* q, const float* mul, const float* add, floats<Isa>* out) noexcept {
  using batch = floats<Isa>;
  if constexpr (Isa::avx512 && batch::size == 16) {
    for (int h = 0; h < 2; ++h) {
      const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q[h])), _mm512_set1_ps(mul[h]));
      out[h] = Adds ? _mm512_add_ps(kept(p), _mm512_set1_ps(add[h])) : p;
    }
  } else {
    for (int h = 0; h < 2; ++h)
      for (int part = 0; part < 2; ++part) {
        const __m128i bytes = part ? _mm_srli_si128(q[h], 8) : q[h];
        const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), _mm256_set1_ps(mul[h]));
        out[2 * h + part] = Adds ? _mm256_add_ps(kept(p), _mm256_set1_ps(add[h])) : p;
      }
  }
}

/// Whether a format's values are plain nibbles (Q4_0, Q4_1, Q4_K).
template <class F>
concept NibbleFormat = requires(const unsigned char* b) {
  { F::nibble_bytes(b, index_t(0), 0) } -> std::same_as<const unsigned char*>;
};

/// Chunk `sub` of the block at `b` as 32 / W vectors. On AVX-512 a nibble
/// format skips the integer conversions: its 16 possible values are
/// computed once per half (the same mul · q, rounded, + add as each value
/// would get) and looked up by each nibble (vpermps reads an index's low 4
/// bits, so no mask is needed).
template <class Isa, class F>
inline void chunk_values(const unsigned char* b, index_t sub, const Scales& s, floats<Isa>* out) noexcept {
  if constexpr (Isa::avx512 && floats<Isa>::size == 16 && NibbleFormat<F>) {
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 q = _mm512_sub_ps(iota, _mm512_set1_ps(float(F::nibble_offset)));  // exact small integers
    // Each nibble format's halves share their scale (and min): one table.
    const __m512 p = _mm512_mul_ps(q, _mm512_set1_ps(s.mul[2 * sub]));
    const __m512 table = F::adds ? _mm512_add_ps(kept(p), _mm512_set1_ps(s.add[2 * sub])) : p;
    for (int h = 0; h < 2; ++h) {
      const __m512i bytes =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(F::nibble_bytes(b, sub, h))));
      out[h] = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, unsigned(F::nibble_shift(sub, h))), table);
    }
  } else {
    __m128i q[2];
    F::template quants<Isa>(b, sub, q);
    values<Isa, F::adds>(q, s.mul + 2 * sub, s.add + 2 * sub, out);
  }
}

/// dst[k · dst_stride + j] = src[j · src_stride + k] for a 16 × 16 tile
/// (AVX-512): pairs, quads, then 128-bit lanes exchanged in four rounds.
template <class Isa>
inline void transpose16(const float* src, index_t src_stride, float* dst, index_t dst_stride) noexcept {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * dst_stride, r[i]);
}

/// Runs fn.template operator()<Format>() for a block-quantised dtype.
template <class Fn>
inline void with_format(DType d, Fn&& fn) {
  switch (d) {
    case DType::Q8_0:
      return fn.template operator()<Q8_0>();
    case DType::Q4_0:
      return fn.template operator()<Q4_0>();
    case DType::Q4_1:
      return fn.template operator()<Q4_1>();
    case DType::Q5_0:
      return fn.template operator()<Q5_0>();
    case DType::Q5_1:
      return fn.template operator()<Q5_1>();
    case DType::Q2_K:
      return fn.template operator()<Q2_K>();
    case DType::Q3_K:
      return fn.template operator()<Q3_K>();
    case DType::Q4_K:
      return fn.template operator()<Q4_K>();
    case DType::Q5_K:
      return fn.template operator()<Q5_K>();
    case DType::Q6_K:
      return fn.template operator()<Q6_K>();
    default:
      return;
  }
}

/// How far ahead of the chunk it decodes each row asks for its bytes: a
/// mapped file sits on 4 KiB pages, at whose edges the hardware
/// prefetchers stop, so the kernel keeps the next page coming itself.
inline index_t prefetch_ahead = [] {
  const char* e = std::getenv("MOE_BLOCK_PREFETCH");
  return e ? index_t(std::atoll(e)) : index_t(16384);
}();

/// C[i, j] = A row i · W row j for an MR × NR tile; rows of W are `row_bytes`
/// apart, K a multiple of 32. Each W chunk is decoded once and used by all
/// MR rows of A (read from L1); one accumulator per output, reduced at the
/// end: a fixed summation order.
template <class Isa, class F, int MR, int NR>
void dot_tile(const float* a, index_t lda, const unsigned char* w, index_t row_bytes, index_t K, float* c,
              index_t ldc) noexcept {
  using batch = floats<Isa>;
  constexpr int W = int(batch::size), V = 32 / W;
  batch acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = batch(0.0f);
  Scales scales[NR];
  for (index_t block = 0; block < K / (32 * F::chunks); ++block) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const unsigned char* at = w + j * row_bytes + block * F::bytes;
      // Once per cache line of each row: the same place prefetch_ahead bytes on.
      if ((block * F::bytes) % 64 < F::bytes) __builtin_prefetch(at + prefetch_ahead);
      F::template scales<Isa>(at, scales[j]);
    }
    for (index_t sub = 0; sub < F::chunks; ++sub) {
      const index_t k = (block * F::chunks + sub) * 32;
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) {
        batch wv[V];
        chunk_values<Isa, F>(w + j * row_bytes + block * F::bytes, sub, scales[j], wv);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v)
            acc[i][j] = xsimd::fma(batch::load_unaligned(a + i * lda + k + v * W), wv[v], acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = reduce_add(acc[i][j]);
}

}  // namespace blocks

/// C[m, n] = Σ_k A[m, k] · W[r0 + n, k] for rows [r0, r0 + N) of a
/// block-quantised W, its blocks decoded in registers as they stream.
template <class Isa>
void block_gemm_nt(const float* A, index_t lda, index_t M, const WeightMatrix& w, index_t r0, index_t N, float* C,
                   index_t ldc) noexcept {
  constexpr int MR = 3, NR = Isa::avx512 ? 4 : 2;
  const index_t row_bytes = bytes_of(w.dtype, w.cols);
  const unsigned char* base = w.row_bytes(r0);
  blocks::with_format(w.dtype, [&]<class F>() {
    for (index_t m = 0; m < M; m += MR)
      for (index_t n = 0; n < N; n += NR) {
        const float* a = A + m * lda;
        const unsigned char* b = base + n * row_bytes;
        float* c = C + m * ldc + n;
        const index_t mr = std::min<index_t>(MR, M - m), nr = std::min<index_t>(NR, N - n);
        const auto tile = [&]<int R>() {
          if (nr == NR) return blocks::dot_tile<Isa, F, R, NR>(a, lda, b, row_bytes, w.cols, c, ldc);
          if constexpr (NR > 2)
            if (nr >= 2) {
              blocks::dot_tile<Isa, F, R, 2>(a, lda, b, row_bytes, w.cols, c, ldc);
              if (nr == 3) blocks::dot_tile<Isa, F, R, 1>(a, lda, b + 2 * row_bytes, row_bytes, w.cols, c + 2, ldc);
              return;
            }
          blocks::dot_tile<Isa, F, R, 1>(a, lda, b, row_bytes, w.cols, c, ldc);
        };
        if (mr == 3)
          tile.template operator()<3>();
        else if (mr == 2)
          tile.template operator()<2>();
        else
          tile.template operator()<1>();
      }
  });
}

/// Rows [r0, r0 + n) of a block-quantised W dequantised into dst (n · cols floats).
template <class Isa>
void dequantize_rows(const WeightMatrix& w, index_t r0, index_t n, float* dst) noexcept {
  using batch = floats<Isa>;
  constexpr int W = int(batch::size), V = 32 / W;
  const unsigned char* base = w.row_bytes(r0);
  const index_t count = n * w.cols / 32;  // chunks
  blocks::with_format(w.dtype, [&]<class F>() {
    blocks::Scales scales;
    for (index_t block = 0; block < count / F::chunks; ++block) {
      const unsigned char* at = base + block * F::bytes;
      F::template scales<Isa>(at, scales);
      for (index_t sub = 0; sub < F::chunks; ++sub) {
        batch v[V];
        blocks::chunk_values<Isa, F>(at, sub, scales, v);
        for (int i = 0; i < V; ++i) v[i].store_unaligned(dst + (block * F::chunks + sub) * 32 + i * W);
      }
    }
  });
}

/// Many rows (prefill): C[n, count·NR] = A · panels [first, first + count)
/// of W (or of the gate/up pair, gate rows in a panel's first half) laid out
/// as pack_panels lays fp32 panels out, but made here, one depth block of
/// `count` panels at a time, from the blocks into `buffer` (per thread; a
/// depth block of 16 panels is 512 KB, L2-resident) and run by the fp32
/// panel micro-kernel: each weight dequantised once per row block instead
/// of once per row.
template <class Isa>
void block_panel_gemm(const float* A, const RowLayout& L, const WeightMatrix& w, const WeightMatrix* up, index_t width,
                      index_t first, index_t count, float* C, index_t ldc, std::vector<float>& buffer) {
  const index_t per_panel = up ? width / 2 : width, K = w.cols;
  // Depth blocks of 256 (whole blocks of every format), within L's blocks
  // (256 too, or the whole depth for one row group, which any range of k reads).
  alignas(64) float values[panel_depth_block];
  for (index_t k0 = 0; k0 < K; k0 += panel_depth_block) {
    const index_t kc = std::min(panel_depth_block, K - k0);
    // 64-byte aligned, as packed panels are: the micro-kernel loads them aligned.
    float* grown = grow(buffer, std::size_t(count * kc * width + 16));
    float* panels = grown + (16 - reinterpret_cast<std::uintptr_t>(grown) / sizeof(float) % 16) % 16;
    if constexpr (Isa::avx512 && floats<Isa>::size == 16) {
      // Sixteen columns at a time: their rows dequantised side by side into
      // L1, then turned into the panel's k-major order 16 × 16 at a time.
      alignas(64) float rows[16 * panel_depth_block];
      for (index_t p = 0; p < count; ++p)
        for (index_t j0 = 0; j0 < width; j0 += 16) {
          for (index_t j = j0; j < j0 + 16; ++j) {
            const WeightMatrix& m = up && j >= per_panel ? *up : w;
            const index_t row = (first + p) * per_panel + j % per_panel;
            float* dst = rows + (j - j0) * kc;
            if (row < m.rows)
              dequantize_rows<Isa>({m.row_bytes(row) + bytes_of(m.dtype, k0), m.dtype, 1, kc}, 0, 1, dst);
            else
              std::fill(dst, dst + kc, 0.0f);  // past the last output: zero, as packing pads
          }
          for (index_t k = 0; k < kc; k += 16)
            blocks::transpose16<Isa>(rows + k, kc, panels + p * kc * width + k * width + j0, width);
        }
    } else {
      for (index_t p = 0; p < count; ++p)
        for (index_t j = 0; j < width; ++j) {
          const WeightMatrix& m = up && j >= per_panel ? *up : w;
          const index_t row = (first + p) * per_panel + j % per_panel;
          float* dst = panels + p * kc * width + j;
          if (row >= m.rows) {  // past the last output: zero, as packing pads
            for (index_t k = 0; k < kc; ++k) dst[k * width] = 0.0f;
            continue;
          }
          dequantize_rows<Isa>({m.row_bytes(row) + bytes_of(m.dtype, k0), m.dtype, 1, kc}, 0, 1, values);
          for (index_t k = 0; k < kc; ++k) dst[k * width] = values[k];
        }
    }
    for (index_t p = 0; p < count; ++p) {
      const auto* panel = reinterpret_cast<const std::byte*>(panels + p * kc * width);
      for (index_t i = 0; i < L.rows; i += panel_rows)
        with_tile_rows(std::min<index_t>(panel_rows, L.rows - i), [&]<int MR>() {
          panel_tile<Isa, DType::F32, MR>(A + L.at(i, k0), panel, kc, C + i * ldc + p * width, ldc, k0 > 0, nullptr);
        });
    }
  }
}

#else

template <class Isa>
void block_gemm_nt(const float*, index_t, index_t, const WeightMatrix&, index_t, index_t, float*, index_t) noexcept {
  static_assert(has_block_kernels<Isa>, "block kernels are x86 only");
}
template <class Isa>
void dequantize_rows(const WeightMatrix&, index_t, index_t, float*) noexcept {
  static_assert(has_block_kernels<Isa>, "block kernels are x86 only");
}
template <class Isa>
void block_panel_gemm(const float*, const RowLayout&, const WeightMatrix&, const WeightMatrix*, index_t, index_t,
                      index_t, float*, index_t, std::vector<float>&) {
  static_assert(has_block_kernels<Isa>, "block kernels are x86 only");
}

#endif

}  // namespace moe::backend::cpu
