#pragma once
/// \file generate.hpp
/// Autoregressive generation: one prefill pass over the prompt, then one
/// decode pass per new token, each reading the KV cache instead of the
/// whole prefix.

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "moe/models/mixtral/model.hpp"
#include "moe/models/mixtral/sampler.hpp"

namespace moe::mixtral {

struct GenerateOptions {
  index_t max_new_tokens = 32;
  SamplingOptions sampling;
  std::vector<std::int32_t> stop_tokens{};  ///< generation ends after emitting one of these
  bool stop_at_eos = true;                  ///< ... or the model's eos_token_id (config.json), unless false
};

struct GenerateResult {
  std::vector<std::int32_t> tokens;  ///< the new tokens (a stop token included)
  enum class End { length, stop_token, context_full } end = End::length;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  index_t prompt_tokens = 0;
  std::vector<std::vector<index_t>> expert_tokens;  ///< [layer][expert]: tokens routed there, prompt and new

  double prefill_tokens_per_second() const { return prefill_seconds > 0 ? double(prompt_tokens) / prefill_seconds : 0; }
  /// Decode passes are one fewer than new tokens: the first comes from the prefill.
  double decode_tokens_per_second() const {
    return decode_seconds > 0 && tokens.size() > 1 ? double(tokens.size() - 1) / decode_seconds : 0;
  }
};

/// Generates up to max_new_tokens after `prompt`, calling on_token(id) as
/// each one is chosen (for streaming).
template <LinearBackend B>
GenerateResult generate(const Model<B>& model, std::span<const std::int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(std::int32_t)>& on_token = {}) {
  options.sampling.validate();
  using clock = std::chrono::steady_clock;
  const Config& c = model.config();
  GenerateResult r;
  r.prompt_tokens = index_t(prompt.size());
  r.expert_tokens.assign(std::size_t(c.num_layers), std::vector<index_t>(std::size_t(c.num_experts), 0));
  const auto count_experts = [&](const StepOutput& s) {
    for (std::size_t l = 0; l < s.routing.size(); ++l)
      for (std::int32_t e : s.routing[l].expert)
        if (e >= 0) ++r.expert_tokens[l][std::size_t(e)];
  };

  KvCache cache = model.new_cache();
  auto t0 = clock::now();
  StepOutput step = model.forward(prompt, cache, Logits::last);
  r.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  count_experts(step);

  t0 = clock::now();
  for (index_t i = 0; i < options.max_new_tokens; ++i) {
    const std::int32_t next =
        sample({step.logits.data(), std::size_t(c.vocab_size)}, options.sampling, std::uint64_t(i));
    r.tokens.push_back(next);
    if (on_token) on_token(next);
    const bool eos = options.stop_at_eos && c.eos_token_id && next == *c.eos_token_id;
    if (eos || std::find(options.stop_tokens.begin(), options.stop_tokens.end(), next) != options.stop_tokens.end()) {
      r.end = GenerateResult::End::stop_token;
      break;
    }
    if (i + 1 == options.max_new_tokens) break;
    if (cache.next_position() >= c.max_positions) {
      r.end = GenerateResult::End::context_full;
      break;
    }
    step = model.forward(std::span(&next, 1), cache, Logits::last);
    count_experts(step);
  }
  r.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return r;
}

}  // namespace moe::mixtral
