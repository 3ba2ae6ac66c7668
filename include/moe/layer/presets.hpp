#pragma once
/// \file presets.hpp
/// The published designs, by name. A preset is a bundle of policy types and
/// their published constants; a model difference is a preset, never an `if`
/// inside the layer.
///
///   auto layer = moe::make_layer<moe::presets::Mixtral>(config, weights);
///   moe::PresetLayer<moe::presets::Switch> switch_layer = ...;

#include "moe/layer/moe_layer.hpp"
#include "moe/loss/importance_load.hpp"
#include "moe/loss/losses.hpp"
#include "moe/loss/switch_balance.hpp"
#include "moe/loss/z_loss.hpp"

namespace moe {
namespace presets {

/// Mixtral-8x7B's sparse block (HF MixtralSparseMoeBlock): top-2 of 8,
/// softmax renormalised over the two, SwiGLU experts, dropless; aux loss
/// counted over every slot with Mixtral-8x7B's router_aux_loss_coef 0.02.
/// MixtralTopK<K> is the same block with another num_experts_per_tok.
template <int K>
struct MixtralTopK {
  using router = Router<TopK<K>, NoNoise, SoftmaxThenTopK>;
  using expert = Expert<SwiGLU>;
  using capacity = Dropless;
  using loss = SwitchBalanceLoss;
  static router make_router() { return {}; }
  static capacity make_capacity() { return {}; }
  static loss make_loss() { return {.alpha = 0.02f, .counting = SlotCounting::every_slot}; }
};
using Mixtral = MixtralTopK<2>;

/// Switch Transformer (Fedus et al. 2021): top-1, p_max as the weight,
/// jitter 1e-2 in training, capacity factor 1.25 train / 2.0 eval, ReLU
/// expert, balance loss 1e-2 on first choices plus z-loss 1e-3 (ST-MoE, HF).
struct Switch {
  using router = Router<TopK<1>, Jitter, SoftmaxTopKRaw>;
  using expert = Expert<MLP<ReLU>>;
  using capacity = CapacityFactor;
  using loss = Losses<SwitchBalanceLoss, RouterZLoss>;
  static router make_router() { return router(Jitter{.eps = 0.01f}); }
  static capacity make_capacity() { return {.train = 1.25, .eval = 2.0, .min = 4}; }
  static loss make_loss() {
    return loss(SwitchBalanceLoss{.alpha = 0.01f, .counting = SlotCounting::top1}, RouterZLoss{.beta = 1e-3f});
  }
};

/// GShard (Lepikhin et al. 2020): top-2 with the random second expert,
/// gates renormalised over the two, capacity 2·T/E (factor 1 over two
/// slots), aux loss on first choices with weight 1e-2.
struct GShard {
  using router = Router<GShardTop2, NoNoise, SoftmaxThenTopK>;
  using expert = Expert<MLP<ReLU>>;
  using capacity = CapacityFactor;
  using loss = SwitchBalanceLoss;
  static router make_router() { return {}; }
  static capacity make_capacity() { return {.train = 1.0, .eval = 2.0, .min = 4}; }
  static loss make_loss() { return {.alpha = 0.01f, .counting = SlotCounting::top1}; }
};

/// Sparsely-gated MoE (Shazeer et al. 2017): noisy top-k with a learned
/// noise scale, softmax over the k kept, importance + load CV² losses (0.1).
struct ShazeerNoisyTopK {
  using router = Router<TopK<2>, NoisyTopK, SoftmaxThenTopK>;
  using expert = Expert<MLP<ReLU>>;
  using capacity = Dropless;
  using loss = ImportanceLoadLoss;
  static router make_router() { return {}; }
  static capacity make_capacity() { return {}; }
  static loss make_loss() { return {.w_importance = 0.1f, .w_load = 0.1f}; }
};

}  // namespace presets

/// The layer type a preset names, on a chosen backend.
template <class P, BackendPolicy B = DefaultBackend>
using PresetLayer = MoELayer<typename P::router, typename P::expert, typename P::capacity, typename P::loss, B>;

/// Builds a preset's layer with the preset's published constants.
template <class P, BackendPolicy B = DefaultBackend>
PresetLayer<P, B> make_layer(LayerConfig config, LayerWeights weights, B backend = {}) {
  return PresetLayer<P, B>(config, std::move(weights), P::make_router(), P::make_capacity(), P::make_loss(),
                           std::move(backend));
}

}  // namespace moe
