#pragma once
/// \file gemm_job.hpp
/// One product C[m, n] = A·Bᵀ of the training GEMMs (train_gemm.hpp), its
/// operands read through strides: a row-major matrix, the transpose of
/// one, or two side by side along the depth.

#include <limits>

#include "moe/core/types.hpp"

namespace moe::backend::cpu {

/// Element (i, k) of an fp32 operand: data[i·row_step + k·k_step]; from
/// depth `split` on, data2[i·row_step2 + (k − split)·k_step2].
struct Operand {
  const float* data = nullptr;
  index_t row_step = 0, k_step = 1;
  const float* data2 = nullptr;
  index_t row_step2 = 0, k_step2 = 1;
  index_t split = std::numeric_limits<index_t>::max();

  /// A row-major [rows, K] matrix with rows `stride` apart.
  static Operand rows(const float* p, index_t stride) { return {p, stride, 1}; }
  /// The transpose of a row-major matrix with rows `stride` apart.
  static Operand transposed(const float* p, index_t stride) { return {p, 1, stride}; }
  /// [a | b] along k, a of depth `split`.
  static Operand side_by_side(Operand a, Operand b, index_t split) {
    return {a.data, a.row_step, a.k_step, b.data, b.row_step, b.k_step, split};
  }

  float operator()(index_t i, index_t k) const noexcept {
    return k < split ? data[i * row_step + k * k_step] : data2[i * row_step2 + (k - split) * k_step2];
  }
};

/// One product of a grouped GEMM.
struct GemmJob {
  index_t m = 0, n = 0, depth = 0;  ///< C is [m, n], over depth K
  Operand a, b;
};

}  // namespace moe::backend::cpu
