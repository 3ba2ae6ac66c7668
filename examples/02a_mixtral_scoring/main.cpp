// 02a: Mixtral scoring: softmax, top-k, renormalise.
//
// After choosing experts, the router weighs their outputs. Hugging Face
// Mixtral takes the softmax over all E logits, keeps the top k, and divides
// by their sum, so a token's weights add up to 1. That is the same as a
// softmax over just the k chosen logits (how mistral-inference writes it).
// With k = 1 the single weight is exactly 1: the router's confidence is lost,
// which is why Switch (02b) does not renormalise.
#include <moe/moe.hpp>

#include "../check.hpp"

int main() {
  const float logits[4] = {2.0f, -1.0f, 0.5f, 1.5f};
  float probs[4], w[2];
  std::int32_t idx[2];
  const moe::SoftmaxThenTopK scoring;
  moe::TopK<2>{}.select(logits, 4, idx);
  scoring.probabilities(logits, 4, probs);
  scoring.weights(logits, probs, idx, 2, w);
  std::printf("softmax over all 4: %.4f %.4f %.4f %.4f\n", probs[0], probs[1], probs[2], probs[3]);
  std::printf("top-2: e%d, e%d; renormalised weights %.4f, %.4f\n", idx[0], idx[1], w[0], w[1]);

  const double e0 = std::exp(2.0), e3 = std::exp(1.5);
  example::expect(idx[0] == 0 && idx[1] == 3, "the two largest logits are e0 and e3");
  example::expect(example::near(w[0], e0 / (e0 + e3)) && example::near(w[1], e3 / (e0 + e3)),
                  "weights = softmax over the two chosen logits");
  example::expect(example::near(w[0] + w[1], 1.0), "weights sum to 1");
  example::expect(example::near(w[0], probs[0] / (probs[0] + probs[3])),
                  "= softmax over all, then divided by the kept sum");
  float one[1];
  scoring.weights(logits, probs, idx, 1, one);
  example::expect(one[0] == 1.0f, "with k = 1 the weight is exactly 1");
  return example::verdict();
}
