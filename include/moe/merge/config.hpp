#pragma once
/// \file config.hpp
/// What a frankenMoE merge is asked to build: mergekit-moe's configuration
/// (its YAML keys, one field each), and mergekit's own checks of it, in its
/// order and with its messages, so that a config mergekit refuses is refused
/// here for the same reason.
///
/// A frankenMoE is a Mixtral assembled from dense Mistral/Llama models of one
/// shape: attention, norms, embeddings and lm_head come from `base_model`;
/// layer l's expert e is the FFN of layer l of `experts[e].source_model`; each
/// layer's router rows are initialised from prompts (`gate_mode`). The YAML
/// reader is moe/merge/yaml_config.hpp; the checks that need the models'
/// config.json files (same shapes, one family) come with the merge itself.

#include <optional>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe::merge {

/// How router rows are initialised (mergekit's `gate_mode`).
enum class GateMode {
  hidden,          ///< per layer: mean residual stream entering the layer at the prompts' last token (default)
  hidden_avg,      ///< the same, averaged over every position of the padded batch
  cheap_embed,     ///< the normalised sum of the prompts' token embeddings, the same for every layer
  random,          ///< standard normal, unscaled; no prompts needed
  uniform_random,  ///< U(-1/sqrt(H), 1/sqrt(H)), nn.Linear's init
};

inline const char* name(GateMode m) noexcept {
  switch (m) {
    case GateMode::hidden:
      return "hidden";
    case GateMode::hidden_avg:
      return "hidden_avg";
    case GateMode::cheap_embed:
      return "cheap_embed";
    case GateMode::random:
      return "random";
    case GateMode::uniform_random:
      return "uniform_random";
  }
  return "?";
}

/// One routed expert: the model whose FFNs it takes, and the prompts that
/// should reach it.
struct ExpertSource {
  std::string source_model;                   ///< a local Hugging Face folder
  std::vector<std::string> positive_prompts;  ///< what this expert should get
  std::vector<std::string> negative_prompts;  ///< what it should not (subtracted)
  std::optional<double> noise_scale;          ///< add N(0, 1)·scale to w1, w2, w3
  std::optional<double> residual_scale;       ///< multiply w2 (down_proj) by it
};

struct MergeConfig {
  std::string base_model;  ///< donor of everything but the FFNs, and of the tokenizer
  std::vector<ExpertSource> experts;
  GateMode gate_mode = GateMode::hidden;
  std::optional<DType> dtype;  ///< none: the base's torch_dtype, else each tensor's own
  int experts_per_token = 2;
  std::string text;  ///< the config as written (copied beside the merge)
};

/// mergekit-moe's flag --i-understand-this-is-not-useful-without-training.
struct ValidateOptions {
  bool allow_identical_models = false;
};

/// Throws moe::Error(invalid_argument) with mergekit's message where
/// mergekit-moe's is_bad_config would refuse `c` (the same checks, in the
/// same order; `random` needs no prompts and skips the rest).
inline void validate(const MergeConfig& c, ValidateOptions options = {}) {
  using detail::require;
  require(c.experts_per_token >= 1, ErrorCode::invalid_argument, "Experts per token must be >= 1");
  require(c.experts.size() >= std::size_t(c.experts_per_token), ErrorCode::invalid_argument,
          "Must include at least as many experts as experts_per_token.");
  if (c.gate_mode == GateMode::random) return;
  for (std::size_t i = 0; i < c.experts.size(); ++i)
    require(!c.experts[i].positive_prompts.empty(), ErrorCode::invalid_argument, "Expert ", i,
            " has no positive prompts.");
  const auto same_prompts = [&](const ExpertSource& e) {
    return e.positive_prompts == c.experts[0].positive_prompts && e.negative_prompts == c.experts[0].negative_prompts;
  };
  bool all_same_prompts = true, all_same_models = true;
  for (const ExpertSource& e : c.experts) {
    all_same_prompts = all_same_prompts && same_prompts(e);
    all_same_models = all_same_models && e.source_model == c.experts[0].source_model;
  }
  require(!all_same_prompts, ErrorCode::invalid_argument,
          "Your positive and negative prompts are identical for all experts. This will not produce a functioning "
          "MoE. For each expert, `positive_prompts` must contain one or more example prompt reflecting what should "
          "be routed to that expert.");
  require(options.allow_identical_models || !all_same_models, ErrorCode::invalid_argument,
          "All of your expert models are the same. This will produce a model that uses more resources but gives the "
          "exact same output. If you plan to train the model after merging, proceed with the "
          "--i-understand-this-is-not-useful-without-training flag.");
}

}  // namespace moe::merge
