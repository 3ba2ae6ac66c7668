#pragma once
/// \file moe.hpp
/// The one include a user needs: every public piece of moe.
///
///   #include <moe/moe.hpp>
///   auto layer = moe::make_layer<moe::presets::Mixtral>(config, weights);
///   moe::Output out = layer.forward(x);

#include "moe/version.hpp"

#include "moe/core/error.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"
#include "moe/core/weight_version.hpp"

#include "moe/routing/expert_choice.hpp"
#include "moe/routing/noise.hpp"
#include "moe/routing/router.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/routing_grad.hpp"
#include "moe/routing/scoring.hpp"
#include "moe/routing/selection.hpp"

#include "moe/expert/activation.hpp"
#include "moe/expert/dropout.hpp"
#include "moe/expert/expert.hpp"
#include "moe/expert/ffn.hpp"
#include "moe/expert/gradients.hpp"

#include "moe/capacity/capacity.hpp"
#include "moe/capacity/plan.hpp"

#include "moe/loss/balance_loss.hpp"
#include "moe/loss/importance_load.hpp"
#include "moe/loss/losses.hpp"
#include "moe/loss/switch_balance.hpp"
#include "moe/loss/z_loss.hpp"

#include "moe/backend/cpu.hpp"
#include "moe/backend/cpu/dispatch.hpp"
#include "moe/backend/default.hpp"
#include "moe/backend/eigen_gemm.hpp"
#include "moe/backend/reference.hpp"

#include "moe/layer/moe_layer.hpp"
#include "moe/layer/presets.hpp"
#include "moe/layer/stats.hpp"
#include "moe/layer/weight_store.hpp"

#include "moe/train/bias_balancer.hpp"
#include "moe/train/optimizer.hpp"
#include "moe/train/parameters.hpp"

#include "moe/io/check_values.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/safetensors_writer.hpp"

#include "moe/models/mixtral.hpp"
