// 03: Noise, jitter and seeds.
//
// Training a router needs exploration, or a few experts win early and the
// rest never learn. Shazeer et al. (2017) add Gaussian noise to the logits
// with a learned scale (NoisyTopK); Switch multiplies the router input by
// U(1-ε, 1+ε) (Jitter). Both act in training mode only.
//
// moe draws every random number from a counter-based generator (Philox)
// keyed by (seed, step, token, column): a draw is a pure function of where
// it is used, not of the order threads run in. Same seed and step, same
// routing, on 1 thread or 7. A new step draws new noise.
#include <moe/moe.hpp>

#include "../check.hpp"

int main() {
  const moe::LayerConfig config{.d_model = 32, .d_ff = 64, .num_experts = 8, .seed = 1234};
  const moe::WeightStore weights = moe::WeightStore::random(config, false, moe::DType::F32, 7, /*noise_weight=*/true);
  const moe::Matrix x = moe::random_normal_matrix(100, 32, 1);

  using P = moe::presets::ShazeerNoisyTopK;
  const auto one_thread = moe::make_layer<P>(config, weights.view(), moe::backend::Cpu<>(1));
  const auto seven_threads = moe::make_layer<P>(config, weights.view(), moe::backend::Cpu<>(7));

  const moe::Output eval = one_thread.forward(x);
  const moe::Output a = one_thread.forward(x, {moe::Mode::train, /*step=*/5});
  const moe::Output b = seven_threads.forward(x, {moe::Mode::train, 5});
  const moe::Output c = one_thread.forward(x, {moe::Mode::train, 6});

  int changed = 0;
  for (std::size_t i = 0; i < a.routing.expert.size(); ++i) changed += a.routing.expert[i] != eval.routing.expert[i];
  std::printf("noise changed %d of %zu expert choices at step 5\n", changed, a.routing.expert.size());
  std::printf("noise scale (softplus of x·W_noise) for token 0, expert 0: %.4f\n", a.routing.noise_std[0]);

  example::expect(eval.routing.noise_std.empty(), "inference is noise-free");
  example::expect(changed > 0, "training noise changes some routing decisions");
  example::expect(a.y == b.y && a.routing.expert == b.routing.expert, "1 thread and 7 threads: bitwise identical");
  example::expect(a.routing.logits != c.routing.logits, "the next step draws new noise");

  // Switch jitter: router input × U(1-ε, 1+ε), experts see the plain x.
  const auto sw = moe::make_layer<moe::presets::Switch>(config, weights.view());
  const moe::Output j = sw.forward(x, {moe::Mode::train, 5});
  const moe::Output plain = sw.forward(x);
  double max_rel = 0;
  for (std::size_t i = 0; i < j.routing.logits.size(); ++i)
    max_rel = std::max(max_rel, double(std::abs(j.routing.logits[i] - plain.routing.logits[i])));
  std::printf("jitter ε = 0.01 moved logits by at most %.4f\n", max_rel);
  example::expect(max_rel > 0 && max_rel < 0.5, "jitter perturbs the logits a little");
  return example::verdict();
}
