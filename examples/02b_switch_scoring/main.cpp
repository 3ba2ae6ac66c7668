// 02b: Switch scoring: top-1 without renormalising.
//
// The Switch Transformer sends each token to one expert and scales that
// expert's output by p_max, the softmax probability of the chosen expert,
// kept as it is. The gradient through p_max is what trains the router: with
// a renormalised weight (always 1 for k = 1, see 02a) it would get none.
// Qwen2-MoE also skips renormalisation by default. DeepSeek-V3 uses
// independent sigmoid scores instead of a softmax (moe::Sigmoid).
#include <moe/moe.hpp>

#include "../check.hpp"

int main() {
  const float logits[4] = {2.0f, -1.0f, 0.5f, 1.5f};
  float probs[4], w[1], sig[4], ws[2];
  std::int32_t idx[2];
  moe::TopK<1>{}.select(logits, 4, idx);
  const moe::SoftmaxTopKRaw raw;
  raw.probabilities(logits, 4, probs);
  raw.weights(logits, probs, idx, 1, w);
  std::printf("Switch: expert e%d, weight p_max = %.4f\n", idx[0], w[0]);
  example::expect(idx[0] == 0 && w[0] == probs[0], "the weight is the chosen expert's probability");
  example::expect(w[0] < 1.0f, "not renormalised: it stays below 1");

  const moe::Sigmoid deepseek{.normalize = true, .scale = 1.0f};
  moe::TopK<2>{}.select(logits, 4, idx);
  deepseek.probabilities(logits, 4, sig);
  deepseek.weights(logits, sig, idx, 2, ws);
  std::printf("Sigmoid top-2: e%d %.4f, e%d %.4f (scores %.4f %.4f)\n", idx[0], ws[0], idx[1], ws[1], sig[idx[0]],
              sig[idx[1]]);
  example::expect(example::near(sig[0], 1.0 / (1.0 + std::exp(-2.0))), "sigmoid scores are independent per expert");
  example::expect(example::near(ws[0] + ws[1], 1.0), "normalised over the chosen (norm_topk_prob)");
  return example::verdict();
}
