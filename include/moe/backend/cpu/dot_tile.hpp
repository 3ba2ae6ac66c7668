#pragma once
/// \file dot_tile.hpp
/// C = A · Bᵀ on the CPU with xsimd: both operands row-major with the
/// reduction dimension contiguous (nn.Linear's layout for B), so each output
/// is a dot product of two rows. B is fp32, or bf16 as stored (std::uint16_t
/// bits), widened in registers: the decode path over mmap'ed bf16 weights,
/// where widening into a buffer first would cost more than the dot product.
///
/// The micro-kernel holds an MR × NR tile of vector accumulators in
/// registers (3 × 4 = 12 accumulators + 3 A vectors + 1 B vector = 16
/// registers, the AVX2 file), loads each A and B vector once per step and
/// issues MR·NR FMAs for MR + NR loads. Each output's summation order is
/// fixed (lanes, then a horizontal add, then the scalar tail), so results
/// do not depend on threads or tiling.

#include <cstdint>
#include <cstring>

#include "moe/backend/cpu/simd.hpp"
#include "moe/core/types.hpp"

namespace moe::backend::cpu {

/// One SIMD vector of B from fp32 or bf16 storage; and one scalar.
template <class Isa>
inline floats<Isa> load_row(const float* p) noexcept {
  return floats<Isa>::load_unaligned(p);
}
template <class Isa>
inline floats<Isa> load_row(const std::uint16_t* p) noexcept {
  using batch = floats<Isa>;
  if constexpr (Isa::avx512 && batch::size == 16) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  } else if constexpr (Isa::avx2 && batch::size == 8) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  } else {
    alignas(64) float f[batch::size];
    for (std::size_t i = 0; i < batch::size; ++i) f[i] = bf16_bits_to_float(p[i]);
    return batch::load_aligned(f);
  }
}
inline float to_float(float v) noexcept { return v; }
inline float to_float(std::uint16_t bf16) noexcept { return bf16_bits_to_float(bf16); }

template <class Isa, int MR, int NR, class BT>
void dot_tile(const float* a, index_t lda, const BT* b, index_t ldb, index_t K, float* c, index_t ldc) noexcept {
  using batch = floats<Isa>;
  constexpr index_t W = index_t(batch::size);
  batch acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = batch(0.0f);
  index_t kk = 0;
  for (; kk + W <= K; kk += W) {
    batch av[MR];
    for (int i = 0; i < MR; ++i) av[i] = batch::load_unaligned(a + i * lda + kk);
    for (int j = 0; j < NR; ++j) {
      const batch bv = load_row<Isa>(b + j * ldb + kk);
      for (int i = 0; i < MR; ++i) acc[i][j] = xsimd::fma(av[i], bv, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float s = reduce_add(acc[i][j]);
      for (index_t t = kk; t < K; ++t) s += a[i * lda + t] * to_float(b[j * ldb + t]);
      c[i * ldc + j] = s;
    }
}

/// C[m, n] = Σ_k A[m, k] · B[n, k] for an M × N block; tails use smaller tiles.
template <class Isa, class BT>
void gemm_nt(const float* A, index_t lda, index_t M, const BT* B, index_t ldb, index_t N, index_t K, float* C,
             index_t ldc) noexcept {
  constexpr int MR = 3, NR = 4;
  for (index_t m = 0; m < M; m += MR) {
    const index_t mr = std::min<index_t>(MR, M - m);
    for (index_t n = 0; n < N; n += NR) {
      const index_t nr = std::min<index_t>(NR, N - n);
      const float* a = A + m * lda;
      const BT* b = B + n * ldb;
      float* c = C + m * ldc + n;
      // Dispatch the runtime tail sizes to compile-time tiles.
      const auto tile = [&]<int R>() {
        switch (nr) {
          case 4:
            dot_tile<Isa, R, 4, BT>(a, lda, b, ldb, K, c, ldc);
            break;
          case 3:
            dot_tile<Isa, R, 3, BT>(a, lda, b, ldb, K, c, ldc);
            break;
          case 2:
            dot_tile<Isa, R, 2, BT>(a, lda, b, ldb, K, c, ldc);
            break;
          default:
            dot_tile<Isa, R, 1, BT>(a, lda, b, ldb, K, c, ldc);
            break;
        }
      };
      switch (mr) {
        case 3:
          tile.template operator()<3>();
          break;
        case 2:
          tile.template operator()<2>();
          break;
        default:
          tile.template operator()<1>();
          break;
      }
    }
  }
}

}  // namespace moe::backend::cpu
