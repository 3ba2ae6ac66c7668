#pragma once
/// \file mixtral.hpp
/// The reference Mixtral decoder: load a Hugging Face checkpoint, run it,
/// generate.
///
///   moe::mixtral::Model model("path/to/Mixtral-8x7B");
///   auto result = moe::mixtral::generate(model, prompt_ids, {.max_new_tokens = 32});

#include "moe/models/mixtral/attention.hpp"
#include "moe/models/mixtral/config.hpp"
#include "moe/models/mixtral/generate.hpp"
#include "moe/models/mixtral/kv_cache.hpp"
#include "moe/models/mixtral/model.hpp"
#include "moe/models/mixtral/moe_block.hpp"
#include "moe/models/mixtral/rms_norm.hpp"
#include "moe/models/mixtral/rope.hpp"
#include "moe/models/mixtral/routing_svg.hpp"
#include "moe/models/mixtral/sampler.hpp"
#include "moe/models/mixtral/weights.hpp"
#include "moe/models/mixtral/random_checkpoint.hpp"
