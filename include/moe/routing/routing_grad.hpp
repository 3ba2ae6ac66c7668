#pragma once
/// \file routing_grad.hpp
/// RoutingGrad: gradients on the router's outputs, filled in backward by
/// the layer (combine weights) and by the balance losses, then carried back
/// through scoring, noise and the gate's linear map by Router::backward.
///
///   combine  ─► weight ─┐
///   losses   ─► probs  ─┼─► logits (what selection saw) ─► clean logits ─► W_gate, x
///   losses   ─► logits ─┘                └─► noise std ─► W_noise, x
///   load loss ─► clean logits, noise std (Shazeer's smooth load estimator)

#include <algorithm>
#include <vector>

#include "moe/core/types.hpp"

namespace moe {

struct RoutingGrad {
  index_t tokens = 0;
  index_t experts = 0;
  int k = 0;
  std::vector<float> weight;        ///< [T, k] dL/d combine weight
  std::vector<float> probs;         ///< [T, E] dL/d probabilities
  std::vector<float> logits;        ///< [T, E] dL/d logits (after noise)
  std::vector<float> clean_logits;  ///< [T, E] dL/d clean logits, besides the path through logits
  std::vector<float> noise_std;     ///< [T, E] dL/d noise scale, besides the path through logits

  /// Sizes every buffer for (T, E, k) and zeroes it.
  void reset(index_t T, index_t E, int slots) {
    tokens = T;
    experts = E;
    k = slots;
    for (std::vector<float>* v : {&probs, &logits, &clean_logits, &noise_std}) v->assign(std::size_t(T * E), 0.0f);
    weight.assign(std::size_t(T * slots), 0.0f);
  }
};

}  // namespace moe
