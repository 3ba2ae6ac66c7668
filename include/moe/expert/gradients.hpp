#pragma once
/// \file gradients.hpp
/// ExpertGrads: what backward writes for one expert, in fp32 whatever the
/// weights' dtype, in the weights' own layout ([out, in], nn.Linear's).

#include "moe/core/view.hpp"

namespace moe {

struct ExpertGrads {
  Matrix gate;  ///< [d_ff, d_model] dL/dW_gate (gated FFNs; empty otherwise)
  Matrix up;    ///< [d_ff, d_model] dL/dW_up
  Matrix down;  ///< [d_model, d_ff] dL/dW_down

  /// Zeroed grads shaped like an expert of this FFN.
  static ExpertGrads zeros(bool gated, index_t d_model, index_t d_ff) {
    ExpertGrads g;
    if (gated) g.gate = Matrix::Zero(d_ff, d_model);
    g.up = Matrix::Zero(d_ff, d_model);
    g.down = Matrix::Zero(d_model, d_ff);
    return g;
  }
};

}  // namespace moe
