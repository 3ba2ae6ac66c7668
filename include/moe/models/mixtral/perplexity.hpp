#pragma once
/// \file perplexity.hpp
/// Sliding-window perplexity, as transformers' documentation computes it
/// ("Perplexity of fixed-length models"): windows of at most `context`
/// tokens starting every `stride` tokens; each window scores only the
/// tokens the previous one did not reach (its last `end − previous end`),
/// each predicted from all the window's tokens before it; the window's mean
/// negative log-likelihood counts with a weight one less than the tokens it
/// scores (the documentation's `num_valid_tokens − batch_size`, for the
/// label shift), and perplexity is exp of the weighted mean. With stride ==
/// context the windows are disjoint; a smaller stride gives each scored
/// token more context, at more compute.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/models/mixtral/model.hpp"

namespace moe::mixtral {

struct PerplexityOptions {
  index_t context = 1024;  ///< tokens per window (the docs' max_length)
  index_t stride = 512;    ///< tokens between window starts
};

struct PerplexityResult {
  double nll_sum = 0;  ///< Σ over windows of mean NLL × weight
  double weight = 0;   ///< Σ of the weights (tokens scored, less one per window)
  index_t windows = 0;
  index_t scored = 0;  ///< tokens whose log-likelihood was computed
  double mean_nll() const { return weight > 0 ? nll_sum / weight : 0.0; }
  double perplexity() const { return std::exp(mean_nll()); }
};

/// The perplexity of `ids` under `model`; on_window(result so far, window
/// count) after each window (a progress bar, the running figure).
template <LinearBackend B>
PerplexityResult perplexity(const Model<B>& model, std::span<const std::int32_t> ids, const PerplexityOptions& o,
                            const std::function<void(const PerplexityResult&, index_t windows)>& on_window = {}) {
  detail::require(o.context >= 2 && o.stride >= 1 && o.stride <= o.context, ErrorCode::invalid_argument,
                  "perplexity: expected context >= 2 and 1 <= stride <= context, got context ", o.context,
                  " and stride ", o.stride);
  const auto n = index_t(ids.size());
  detail::require(n >= 2, ErrorCode::invalid_argument, "perplexity: the text is ", n,
                  " tokens; at least 2 are needed to predict one");
  detail::require(o.context <= model.config().max_positions, ErrorCode::invalid_argument, "perplexity: context ",
                  o.context, " is longer than the model's ", model.config().max_positions, " positions");
  const index_t windows = (std::max<index_t>(n - o.context, 0) + o.stride - 1) / o.stride + 1;
  const index_t V = model.config().vocab_size;
  PerplexityResult r;
  index_t previous_end = 0;
  for (index_t begin = 0; begin < n; begin += o.stride) {
    const index_t end = std::min(begin + o.context, n), target = end - previous_end;
    KvCache cache = model.new_cache();
    const StepOutput out = model.forward(ids.subspan(std::size_t(begin), std::size_t(end - begin)), cache, Logits::all);
    // Positions p of the window predict token p + 1; the scored tokens are
    // the last `target`, less the window's first (nothing predicts it).
    double nll = 0;
    index_t count = 0;
    for (index_t t = std::max(end - target, begin + 1); t < end; ++t) {
      const float* logits = out.logits.row(t - 1 - begin).data();
      double max = logits[0], sum = 0;
      for (index_t v = 1; v < V; ++v) max = std::max<double>(max, logits[v]);
      for (index_t v = 0; v < V; ++v) sum += std::exp(double(logits[v]) - max);
      nll -= double(logits[ids[std::size_t(t)]]) - max - std::log(sum);
      ++count;
    }
    const double w = double(target - 1);
    if (count > 0) r.nll_sum += nll / double(count) * w;
    r.weight += w;
    r.scored += count;
    ++r.windows;
    if (on_window) on_window(r, windows);
    previous_end = end;
    if (end == n) break;
  }
  return r;
}

}  // namespace moe::mixtral
