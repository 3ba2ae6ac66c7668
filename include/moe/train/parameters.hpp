#pragma once
/// \file parameters.hpp
/// Parameter groups: each trainable weight paired with its gradient, in
/// named groups an optimiser steps through. Freezing a group is what the
/// fine-tuning literature does with MoEs: freeze the router (keep the
/// learned routing, tune the experts), freeze the experts (re-learn the
/// routing only), or train the MoE layer alone (no gradient needed before
/// it: BackwardOptions::input = false).
///
///   auto grads = layer.make_grads();
///   auto groups = moe::train::parameter_groups(store, grads);   // "router", "experts"
///   groups[0].frozen = true;                                    // freeze the router
///   layer.backward(x, ws, dy, grads, moe::train::backward_options(groups));
///   optimiser.step(groups);

#include <span>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/layer/weight_store.hpp"

namespace moe::train {

/// One trainable tensor: its values (updated in place) and its gradient.
struct Parameter {
  std::string name;
  std::span<float> value;
  std::span<const float> grad;
};

/// Parameters an optimiser treats alike.
struct ParamGroup {
  std::string name;
  std::vector<Parameter> params;
  float lr_scale = 1.0f;    ///< multiplies the optimiser's learning rate
  bool frozen = false;      ///< skipped by the optimiser (and by backward, through backward_options)
  WeightVersion version{};  ///< the owner's write counter: bumped by a step that updates the group
};

namespace detail {
inline std::span<const float> flat(const Matrix& m) { return {m.data(), std::size_t(m.size())}; }
}  // namespace detail

/// The layer's weights in two groups, "router" (gate, and noise weight if
/// any) and "experts", each paired with its gradient in g. g must already
/// have the layer's shapes (layer.make_grads()); backward keeps its buffers,
/// so the groups stay valid across steps.
inline std::vector<ParamGroup> parameter_groups(WeightStore& store, LayerGrads& g) {
  ParamGroup router{.name = "router", .params = {}, .version = store.version()},
      experts{.name = "experts", .params = {}, .version = store.version()};
  for (WeightStore::NamedWeight& w : store.parameters()) {
    const Matrix* grad = nullptr;
    if (w.name == "router.gate") grad = &g.router_gate;
    if (w.name == "router.noise") grad = &g.router_noise;
    if (w.name.starts_with("experts.")) {
      const std::size_t e = std::stoul(w.name.substr(8));
      moe::detail::require(e < g.experts.size(), ErrorCode::shape_mismatch, "parameter_groups: ", w.name,
                           " has no gradient (grads hold ", g.experts.size(), " experts; use layer.make_grads())");
      const ExpertGrads& eg = g.experts[e];
      grad = w.name.ends_with(".gate") ? &eg.gate : w.name.ends_with(".up") ? &eg.up : &eg.down;
    }
    moe::detail::require(grad && grad->rows() == w.rows && grad->cols() == w.cols, ErrorCode::shape_mismatch,
                         "parameter_groups: gradient of ", w.name, " is ",
                         grad ? moe::detail::shape_str(grad->rows(), grad->cols()) : "missing", ", the weight is ",
                         moe::detail::shape_str(w.rows, w.cols), " (use layer.make_grads())");
    (w.name.starts_with("router.") ? router : experts).params.push_back({w.name, w.value, detail::flat(*grad)});
  }
  return {router, experts};
}

/// What backward must compute for these groups: no router or expert grads
/// for a frozen group; dL/dx only if `input` (something before the layer trains).
inline BackwardOptions backward_options(std::span<const ParamGroup> groups, bool input = false) {
  BackwardOptions o{.input = input, .router = false, .experts = false};
  for (const ParamGroup& g : groups) {
    if (g.name == "router") o.router = !g.frozen;
    if (g.name == "experts") o.experts = !g.frozen;
  }
  return o;
}

}  // namespace moe::train
