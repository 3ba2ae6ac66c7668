#pragma once
/// \file loglikelihood.hpp
/// How likely a model finds a continuation after a context: the sum of
/// log p(token | everything before it) over the continuation's tokens, and
/// whether each was the model's greedy choice: lm-evaluation-harness's
/// `loglikelihood` request, on which its multiple-choice tasks (HellaSwag,
/// Winogrande, ARC, ...) score each choice. A context and its choices share
/// one prefill: the context runs once, each choice continues a copy of its
/// KV cache.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/models/mixtral/model.hpp"

namespace moe::mixtral {

struct LogLikelihood {
  double sum = 0;      ///< Σ log p over the continuation's tokens
  bool greedy = true;  ///< every continuation token was the most likely one
  index_t tokens = 0;  ///< continuation tokens scored
};

/// log p of each continuation after `context` (at least one token: the
/// first continuation token is predicted from its last). Contexts longer
/// than the model's positions minus the longest continuation are cut from
/// the left, as the harness cuts them.
template <LinearBackend B>
std::vector<LogLikelihood> loglikelihoods(const Model<B>& model, std::span<const std::int32_t> context,
                                          const std::vector<std::vector<std::int32_t>>& continuations) {
  detail::require(!context.empty(), ErrorCode::invalid_argument,
                  "loglikelihood: the context is empty (give at least a BOS token to predict from)");
  index_t longest = 0;
  for (const auto& c : continuations) {
    detail::require(!c.empty(), ErrorCode::invalid_argument, "loglikelihood: an empty continuation");
    longest = std::max(longest, index_t(c.size()));
  }
  const index_t room = model.config().max_positions - longest;
  detail::require(room >= 1, ErrorCode::invalid_argument, "loglikelihood: a continuation of ", longest,
                  " tokens leaves no room for context in ", model.config().max_positions, " positions");
  if (index_t(context.size()) > room) context = context.last(std::size_t(room));
  const index_t V = model.config().vocab_size;
  // log p(id | row's position) and whether id is the row's argmax.
  const auto score = [V](const float* logits, std::int32_t id, LogLikelihood& ll) {
    double max = logits[0];
    index_t best = 0;
    for (index_t v = 1; v < V; ++v)
      if (logits[v] > max) max = logits[v], best = v;
    double sum = 0;
    for (index_t v = 0; v < V; ++v) sum += std::exp(double(logits[v]) - max);
    ll.sum += double(logits[id]) - max - std::log(sum);
    ll.greedy = ll.greedy && best == id;
    ++ll.tokens;
  };
  KvCache shared = model.new_cache();
  const StepOutput prefix = model.forward(context, shared, Logits::last);
  std::vector<LogLikelihood> out;
  for (const auto& c : continuations) {
    LogLikelihood ll;
    score(prefix.logits.row(0).data(), c[0], ll);
    if (c.size() > 1) {
      KvCache cache = shared;  // the context's keys and values, continued by this choice
      const StepOutput rest = model.forward(std::span(c).first(c.size() - 1), cache, Logits::all);
      for (std::size_t i = 1; i < c.size(); ++i) score(rest.logits.row(index_t(i - 1)).data(), c[i], ll);
    }
    out.push_back(ll);
  }
  return out;
}

}  // namespace moe::mixtral
