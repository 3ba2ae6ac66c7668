#pragma once
/// \file linear.hpp
/// out = x · Wᵀ for small matrices (router logits), computed identically by
/// every backend so that routing decisions never depend on the backend.

#include <vector>

#include "moe/core/view.hpp"

namespace moe::detail {

/// Dot product with a fixed summation order: eight interleaved partial sums,
/// combined pairwise. Fixed order means the same bits on every machine that
/// compiles it the same way; eight lanes let the compiler vectorise it.
inline float dot(const float* a, const float* b, index_t n) noexcept {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/// W as fp32: the weight itself when F32, else widened into `scratch`.
inline const float* as_float(const WeightMatrix& w, std::vector<float>& scratch) {
  if (w.dtype == DType::F32) return static_cast<const float*>(w.data);
  scratch.resize(std::size_t(w.rows * w.cols));
  widen_to_float(w.data, w.dtype, 0, w.rows * w.cols, scratch.data());
  return scratch.data();
}

/// out[t, o] = Σ_i x[t, i] · W[o, i], out is [x.rows, W.rows] contiguous.
/// `scratch` holds W widened to fp32 when W is BF16 or F16.
inline void linear_small(MatrixView<const float> x, const WeightMatrix& w, float* out, std::vector<float>& scratch) {
  const float* wf = as_float(w, scratch);
  for (index_t t = 0; t < x.rows; ++t)
    for (index_t o = 0; o < w.rows; ++o) out[t * w.rows + o] = dot(x.row(t), wf + o * w.cols, w.cols);
}

}  // namespace moe::detail
