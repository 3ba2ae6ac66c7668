// moe-demo: a Mixtral-shaped MoE layer on seeded weights. Prints a routing
// table, the routing statistics and losses, checks the Cpu backend against
// the Reference one, and measures throughput.
//
//   moe-demo [--tokens N] [--d-model D] [--d-ff F] [--experts E]
//            [--dtype f32|bf16] [--threads N] [--seed S] [--iters N] [--full]
//
// Defaults: d_model 1024, d_ff 3584, 8 experts, top-2 (Mixtral-8x7B's
// proportions at a quarter of its width), 512 tokens, fp32 weights.
// --full uses Mixtral-8x7B's real sizes (4096, 14336): 5.6 GB of fp32 weights.
#include <moe/moe.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct Options {
  moe::index_t tokens = 512, d_model = 1024, d_ff = 3584, experts = 8;
  moe::DType dtype = moe::DType::F32;
  int threads = 0;  // 0 = all hardware threads
  std::uint64_t seed = 2024;
  int iters = 5;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw moe::Error(moe::ErrorCode::invalid_argument, a + ": missing value");
      return argv[++i];
    };
    const auto number = [&]() -> long long {
      const std::string v = value();
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 0)
        throw moe::Error(moe::ErrorCode::invalid_argument, a + ": expected a non-negative integer, got '" + v + "'");
      return n;
    };
    if (a == "--tokens")
      o.tokens = number();
    else if (a == "--d-model")
      o.d_model = number();
    else if (a == "--d-ff")
      o.d_ff = number();
    else if (a == "--experts")
      o.experts = number();
    else if (a == "--threads")
      o.threads = int(number());
    else if (a == "--seed")
      o.seed = std::uint64_t(number());
    else if (a == "--iters")
      o.iters = std::max(1, int(number()));
    else if (a == "--full") {
      o.d_model = 4096;
      o.d_ff = 14336;
    } else if (a == "--dtype") {
      const std::string v = value();
      if (v == "f32")
        o.dtype = moe::DType::F32;
      else if (v == "bf16")
        o.dtype = moe::DType::BF16;
      else
        throw moe::Error(moe::ErrorCode::invalid_argument, "--dtype: expected f32 or bf16, got '" + v + "'");
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: moe-demo [--tokens N] [--d-model D] [--d-ff F] [--experts E] [--dtype f32|bf16]\n"
          "                [--threads N] [--seed S] [--iters N] [--full]\n");
      std::exit(0);
    } else {
      throw moe::Error(moe::ErrorCode::invalid_argument, "unknown option '" + a + "' (try --help)");
    }
  }
  return o;
}

// Mixtral routing and experts, reporting both the balance loss and the z-loss.
using Loss = moe::Losses<moe::SwitchBalanceLoss, moe::RouterZLoss>;
template <class Backend>
using Layer = moe::MoELayer<moe::presets::Mixtral::router, moe::presets::Mixtral::expert, moe::Dropless, Loss, Backend>;

template <class Backend>
Layer<Backend> make(const moe::LayerConfig& c, const moe::WeightStore& w, Backend b = {}) {
  return Layer<Backend>(c, w.view(), {}, {}, Loss(moe::presets::Mixtral::make_loss(), moe::RouterZLoss{}), b);
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  const moe::LayerConfig config{.d_model = o.d_model, .d_ff = o.d_ff, .num_experts = o.experts, .seed = o.seed};
  constexpr int k = moe::presets::Mixtral::router::top_k;
  std::printf("moe %d.%d.%d demo: Mixtral-shaped layer, d_model %lld, d_ff %lld, %lld experts, top-%d, %s weights\n",
              moe::version_major, moe::version_minor, moe::version_patch, (long long)o.d_model, (long long)o.d_ff,
              (long long)o.experts, k, std::string(moe::name(o.dtype)).c_str());

  const moe::WeightStore weights = moe::WeightStore::random(config, true, o.dtype, o.seed);
  const moe::backend::Cpu<> cpu = o.threads > 0 ? moe::backend::Cpu<>(o.threads) : moe::backend::Cpu<>();
  const auto layer = make(config, weights, cpu);
  // Tokens: seeded N(0, 1) activations, as after an RMSNorm.
  const moe::Matrix x = moe::random_normal_matrix(o.tokens, o.d_model, o.seed + 1);

  const moe::Output out = layer.forward(x);

  std::printf("\nrouting of the first tokens (expert: combine weight)\n  token  ");
  for (int j = 0; j < k; ++j) std::printf("slot %d          ", j);
  std::printf("\n");
  for (moe::index_t t = 0; t < std::min<moe::index_t>(8, o.tokens); ++t) {
    std::printf("  %5lld  ", (long long)t);
    for (int j = 0; j < k; ++j)
      std::printf("e%-3d %.4f      ", out.routing.expert_at(t, j), out.routing.weight_at(t, j));
    std::printf("\n");
  }

  const moe::RoutingStats& s = out.stats;
  std::printf("\nstats over %lld tokens\n  tokens per expert:", (long long)s.tokens);
  for (moe::index_t n : s.computed_per_expert) std::printf(" %lld", (long long)n);
  std::printf("\n  dropped slots: %lld (dropless)\n", (long long)s.dropped_slots);
  std::printf("  router entropy: %.4f nats (uniform would be %.4f)\n", s.router_entropy, std::log(double(o.experts)));
  std::printf("  balance loss (HF Mixtral, balanced = %d): %.6f\n", k, s.loss("balance").value_or(0));
  std::printf("  router z-loss: %.6f\n", s.loss("z").value_or(0));
  std::printf("  weighted loss (0.02 aux + 0.001 z): %.6f\n", s.weighted_loss);

  // The Cpu backend against the readable Reference on a few tokens.
  const moe::index_t check_tokens = std::min<moe::index_t>(o.tokens, 16);
  const moe::Matrix head = x.topRows(check_tokens);
  const moe::Output ref = make(config, weights, moe::backend::Reference{}).forward(head);
  const float scale = std::max(1.0f, ref.y.size() ? ref.y.cwiseAbs().maxCoeff() : 0.0f);
  const float diff = ref.y.size() ? (ref.y - out.y.topRows(check_tokens)).cwiseAbs().maxCoeff() / scale : 0.0f;
  // Routing is per token, so the first rows of the full forward's choices are the head's.
  const bool same_routing =
      std::equal(ref.routing.expert.begin(), ref.routing.expert.end(), out.routing.expert.begin());
  std::printf("\ncpu vs reference on %lld tokens: max rel. difference %.2e, routing %s\n", (long long)check_tokens,
              diff, same_routing ? "identical" : "DIFFERENT");

  // Throughput: median of several forward calls.
  std::vector<double> seconds;
  for (int i = 0; i < o.iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const moe::Output again = layer.forward(x);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  // Expert FLOPs: 3 matrices of d_model × d_ff, 2 FLOPs per multiply-add, per (token, slot).
  const double flops = 2.0 * 3.0 * double(o.d_model) * double(o.d_ff) * double(o.tokens) * k;
  std::printf("throughput (%d threads, median of %d): %.2f ms per forward, %.0f tokens/s, %.1f GFLOP/s\n",
              cpu.threads(), o.iters, 1e3 * median, double(o.tokens) / median, flops / median * 1e-9);
  const bool ok = same_routing && diff < 1e-4f;
  std::printf("%s\n", ok ? "PASSED" : "FAILED");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "moe-demo: %s\n", e.what());
  return 1;
}
