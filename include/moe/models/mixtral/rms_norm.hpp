#pragma once
/// \file rms_norm.hpp
/// RMSNorm (Zhang & Sennrich 2019), as Mixtral applies it before attention,
/// before the MoE block and at the end:
///
///   y = weight ⊙ x / sqrt(mean(x²) + eps)        over each row of x
///
/// No mean is subtracted and there is no bias. The mean of squares is summed
/// in double: it is H terms of one sign, where fp32 loses the low bits first.

#include <cmath>
#include <span>

#include "moe/core/error.hpp"
#include "moe/core/view.hpp"

namespace moe::mixtral {

inline void rms_norm(MatrixView<const float> x, std::span<const float> weight, double eps, MatrixView<float> y) {
  moe::detail::require(index_t(weight.size()) == x.cols && y.cols == x.cols && y.rows == x.rows,
                       ErrorCode::shape_mismatch, "rms_norm: x is [", x.rows, ", ", x.cols, "], weight [",
                       weight.size(), "], y [", y.rows, ", ", y.cols, "]");
  for (index_t t = 0; t < x.rows; ++t) {
    const float* xt = x.row(t);
    double sum_sq = 0;
    for (index_t i = 0; i < x.cols; ++i) sum_sq += double(xt[i]) * double(xt[i]);
    const float inv_rms = float(1.0 / std::sqrt(sum_sq / double(x.cols) + eps));
    float* yt = y.row(t);
    for (index_t i = 0; i < x.cols; ++i) yt[i] = weight[std::size_t(i)] * (xt[i] * inv_rms);
  }
}

}  // namespace moe::mixtral
