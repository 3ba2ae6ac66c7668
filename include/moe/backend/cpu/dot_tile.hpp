#pragma once
/// \file dot_tile.hpp
/// C = A · Bᵀ on the CPU with xsimd: both operands row-major with the
/// reduction dimension contiguous (nn.Linear's layout for B), so each output
/// is a dot product of two rows.
///
/// The micro-kernel holds an MR × NR tile of vector accumulators in
/// registers (3 × 4 = 12 accumulators + 3 A vectors + 1 B vector = 16
/// registers, the AVX2 file), loads each A and B vector once per step and
/// issues MR·NR FMAs for MR + NR loads. Each output's summation order is
/// fixed (lanes, then a horizontal add, then the scalar tail), so results
/// do not depend on threads or tiling.

#include <xsimd/xsimd.hpp>

#include "moe/core/types.hpp"

namespace moe::backend::cpu {

template <class Arch, int MR, int NR>
void dot_tile(const float* a, index_t lda, const float* b, index_t ldb, index_t K, float* c, index_t ldc) noexcept {
  using batch = xsimd::batch<float, Arch>;
  constexpr index_t W = index_t(batch::size);
  batch acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = batch(0.0f);
  index_t kk = 0;
  for (; kk + W <= K; kk += W) {
    batch av[MR];
    for (int i = 0; i < MR; ++i) av[i] = batch::load_unaligned(a + i * lda + kk);
    for (int j = 0; j < NR; ++j) {
      const batch bv = batch::load_unaligned(b + j * ldb + kk);
      for (int i = 0; i < MR; ++i) acc[i][j] = xsimd::fma(av[i], bv, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float s = xsimd::hadd(acc[i][j]);
      for (index_t t = kk; t < K; ++t) s += a[i * lda + t] * b[j * ldb + t];
      c[i * ldc + j] = s;
    }
}

/// C[m, n] = Σ_k A[m, k] · B[n, k] for an M × N block; tails use smaller tiles.
template <class Arch>
void gemm_nt(const float* A, index_t lda, index_t M, const float* B, index_t ldb, index_t N, index_t K, float* C,
             index_t ldc) noexcept {
  constexpr int MR = 3, NR = 4;
  for (index_t m = 0; m < M; m += MR) {
    const index_t mr = std::min<index_t>(MR, M - m);
    for (index_t n = 0; n < N; n += NR) {
      const index_t nr = std::min<index_t>(NR, N - n);
      const float* a = A + m * lda;
      const float* b = B + n * ldb;
      float* c = C + m * ldc + n;
      // Dispatch the runtime tail sizes to compile-time tiles.
      const auto tile = [&]<int R>() {
        switch (nr) {
          case 4:
            dot_tile<Arch, R, 4>(a, lda, b, ldb, K, c, ldc);
            break;
          case 3:
            dot_tile<Arch, R, 3>(a, lda, b, ldb, K, c, ldc);
            break;
          case 2:
            dot_tile<Arch, R, 2>(a, lda, b, ldb, K, c, ldc);
            break;
          default:
            dot_tile<Arch, R, 1>(a, lda, b, ldb, K, c, ldc);
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
