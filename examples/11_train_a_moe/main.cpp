// 11: Training an MoE layer, and what load balancing does.
//
// The task: inputs come from 8 clusters and each cluster has its own target
// function, tanh(M_c · x). One expert per cluster would be ideal, so experts
// have a reason to specialise, and the router has to learn who goes where.
// All inputs also share a common component (as the hidden states of a
// transformer share directions), so at initialisation most tokens prefer
// the same few experts: the start of a collapse, which is what balancing is
// for.
//
// Five runs of the same layer (8 SwiGLU experts, top-2, capacity factor
// 1.25, Adam), differing only in how the load is balanced:
//   none          the router alone: early winners get more tokens, learn
//                 faster, and get still more (the rich-get-richer collapse)
//   switch        + Switch load-balancing loss, alpha = 0.01 (Fedus et al.)
//   switch+z      + ST-MoE router z-loss, beta = 1e-3 (Zoph et al.)
//   aux-free      no loss: a per-expert bias on the selection scores, moved
//                 by ±gamma after each step against the load (DeepSeek-V3)
//   expert choice each expert takes its top-C tokens (Zhou et al.): balanced
//                 by construction, but some tokens get no expert
//
// Each step is forward → loss → backward → optimiser step, all in moe (no
// framework), on the Cpu backend with every core. For each run it prints
// the final loss, the load's coefficient of variation (std/mean of pairs
// per expert), what was dropped, the router's logit scale, and a table of
// which cluster went to which expert; and it writes load_<run>.svg, the
// share of routed pairs per expert over the steps.
//
//   ./11_train_a_moe [--steps N] [--out DIR]
#include <moe/moe.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "../check.hpp"
#include "svg.hpp"

namespace {

constexpr moe::index_t d_model = 16, d_ff = 32, num_experts = 8, num_clusters = 8, batch = 256, eval_tokens = 2048;

/// Clustered inputs (shared + center_c + 0.3·noise) and a target map per
/// cluster, all drawn from the counter-based generator: batch `b` is the
/// same on every machine.
struct Task {
  moe::Matrix centers = moe::random_normal_matrix(num_clusters, d_model, 100);  // [C, d]
  moe::Matrix shared = moe::random_normal_matrix(1, d_model, 101, 1.5f);        // [1, d] common to all
  std::vector<moe::Matrix> maps;                                                // C × [d, d]

  Task() {
    for (moe::index_t c = 0; c < num_clusters; ++c)
      maps.push_back(moe::random_normal_matrix(d_model, d_model, 200 + std::uint64_t(c), 1.5f / std::sqrt(16.0f)));
  }

  struct Batch {
    moe::Matrix x, target;
    std::vector<int> cluster;
  };
  Batch make(moe::index_t T, std::uint64_t seed) const {
    Batch b{moe::Matrix(T, d_model), moe::Matrix(T, d_model), std::vector<int>(std::size_t(T))};
    for (moe::index_t t = 0; t < T; ++t) {
      const int c = int(moe::uniform({seed, 1}, moe::RngStream::user, std::uint64_t(t), 0) * num_clusters);
      b.cluster[std::size_t(t)] = c;
      for (moe::index_t i = 0; i < d_model; ++i)
        b.x(t, i) = shared(0, i) + centers(c, i) +
                    0.3f * moe::normal({seed, 2}, moe::RngStream::user, std::uint64_t(t), std::uint64_t(i));
      b.target.row(t) = (maps[std::size_t(c)] * b.x.row(t).transpose()).array().tanh().transpose();
    }
    return b;
  }
};

struct Result {
  std::string name;
  double first_loss = 0, loss = 0;  ///< training loss at step 0; held-out loss at the end
  double load_cv = 0;               ///< std/mean of pairs routed per expert (held-out batch)
  double dropped = 0;               ///< dropped (token, slot) pairs / routed pairs
  double passed_through = 0;        ///< tokens that reached no expert / tokens
  double z = 0, max_logit = 0;      ///< mean (logsumexp)², mean max |logit|
  double seconds = 0;
  std::vector<std::vector<double>> load;   ///< [E][step] share of routed pairs
  std::vector<std::vector<double>> table;  ///< [cluster][expert] share of the cluster's pairs
};

double cv(const std::vector<moe::index_t>& n) {
  double mean = 0, var = 0;
  for (moe::index_t v : n) mean += double(v);
  mean /= double(n.size());
  for (moe::index_t v : n) var += (double(v) - mean) * (double(v) - mean);
  return std::sqrt(var / double(n.size())) / mean;
}

/// Trains one layer; `after_step` runs after each optimiser step (the bias balancer).
template <class Layer, class AfterStep>
Result train(const std::string& name, const Layer& layer, moe::WeightStore& store, const Task& task, int steps,
             AfterStep after_step) {
  Result r;
  r.name = name;
  r.load.assign(std::size_t(num_experts), {});
  moe::LayerGrads grads = layer.make_grads();
  std::vector<moe::train::ParamGroup> groups = moe::train::parameter_groups(store, grads);
  moe::train::Adam adam({.lr = 3e-3f});
  auto ws = layer.make_workspace();
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < steps; ++step) {
    const Task::Batch b = task.make(batch, 1000 + std::uint64_t(step));
    const moe::Output& out = layer.forward(b.x, ws, {moe::Mode::train, std::uint64_t(step)});
    const moe::Matrix diff = out.y - b.target;  // loss = ½ mean_t |y − target|²
    if (step == 0) r.first_loss = 0.5 * diff.squaredNorm() / double(batch);
    const moe::Matrix dy = diff / float(batch);
    layer.backward(b.x, ws, dy, grads, moe::train::backward_options(groups));
    adam.step(groups);
    after_step(out.stats);
    double routed = 0;
    for (moe::index_t n : out.stats.routed_per_expert) routed += double(n);
    for (moe::index_t e = 0; e < num_experts; ++e)
      r.load[std::size_t(e)].push_back(double(out.stats.routed_per_expert[std::size_t(e)]) / routed);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Held out: a fresh batch, evaluation mode (no noise, same capacity factor).
  const Task::Batch b = task.make(eval_tokens, 7);
  const moe::Output out = layer.forward(b.x);
  r.loss = 0.5 * (out.y - b.target).squaredNorm() / double(eval_tokens);
  r.load_cv = cv(out.stats.routed_per_expert);
  r.dropped = out.stats.dropped_fraction();
  r.passed_through = double(out.stats.dropped_tokens) / double(eval_tokens);
  r.z = out.stats.loss("z").value_or(0.0f);
  r.table.assign(std::size_t(num_clusters), std::vector<double>(std::size_t(num_experts), 0.0));
  std::vector<double> per_cluster(std::size_t(num_clusters), 0.0);
  for (moe::index_t t = 0; t < eval_tokens; ++t) {
    double lse = 0, m = 0;
    for (moe::index_t e = 0; e < num_experts; ++e) m = std::max(m, double(std::abs(out.routing.logit(t, e))));
    for (moe::index_t e = 0; e < num_experts; ++e) lse += std::exp(double(out.routing.logit(t, e)));
    r.max_logit += m / double(eval_tokens);
    if (!out.stats.loss("z")) r.z += std::log(lse) * std::log(lse) / double(eval_tokens);
    const int c = b.cluster[std::size_t(t)];
    for (int j = 0; j < out.routing.k; ++j)
      if (const std::int32_t e = out.routing.expert_at(t, j); e != moe::no_expert) {
        r.table[std::size_t(c)][std::size_t(e)] += 1.0;
        per_cluster[std::size_t(c)] += 1.0;
      }
  }
  for (std::size_t c = 0; c < r.table.size(); ++c)
    for (double& v : r.table[c]) v /= std::max(1.0, per_cluster[c]);
  return r;
}

template <class Layer>
Result train(const std::string& name, const Layer& layer, moe::WeightStore& store, const Task& task, int steps) {
  return train(name, layer, store, task, steps, [](const moe::RoutingStats&) {});
}

void print_table(const Result& r) {
  std::printf("\n%s: share of each cluster's routed pairs per expert (%%)\n  cluster", r.name.c_str());
  for (moe::index_t e = 0; e < num_experts; ++e) std::printf("  e%-2lld", static_cast<long long>(e));
  std::printf("\n");
  for (std::size_t c = 0; c < r.table.size(); ++c) {
    std::printf("  %7zu", c);
    for (double v : r.table[c]) std::printf(v >= 0.005 ? " %4.0f" : "    .", 100 * v);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 400;
  std::string out_dir = ".";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--out")) out_dir = argv[i + 1];
  }
  const Task task;
  const moe::LayerConfig config{.d_model = d_model, .d_ff = d_ff, .num_experts = num_experts, .seed = 1};
  const moe::CapacityFactor capacity{.train = 1.25, .eval = 1.25, .min = 4};
  using Cpu = moe::backend::Cpu<>;
  using TopK2 = moe::Router<moe::TopK<2>>;
  std::vector<Result> results;

  {  // 1. no balancing
    moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 5);
    const moe::MoELayer<TopK2, moe::Expert<moe::SwiGLU>, moe::CapacityFactor, moe::NoLoss, Cpu> layer(
        config, store.view(), {}, capacity);
    results.push_back(train("none", layer, store, task, steps));
  }
  {  // 2. Switch load-balancing loss
    moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 5);
    const moe::MoELayer<TopK2, moe::Expert<moe::SwiGLU>, moe::CapacityFactor, moe::SwitchBalanceLoss, Cpu> layer(
        config, store.view(), {}, capacity, {.alpha = 0.01f});
    results.push_back(train("switch", layer, store, task, steps));
  }
  {  // 3. Switch loss + z-loss
    using L = moe::Losses<moe::SwitchBalanceLoss, moe::RouterZLoss>;
    moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 5);
    const moe::MoELayer<TopK2, moe::Expert<moe::SwiGLU>, moe::CapacityFactor, L, Cpu> layer(
        config, store.view(), {}, capacity, L({.alpha = 0.01f}, {.beta = 1e-3f}));
    results.push_back(train("switch+z", layer, store, task, steps));
  }
  {  // 4. auxiliary-loss-free: bias on the selection scores
    moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 5);
    store.with_selection_bias();
    using R = moe::Router<moe::BiasedTopK<2>>;
    const moe::MoELayer<R, moe::Expert<moe::SwiGLU>, moe::CapacityFactor, moe::NoLoss, Cpu> layer(config, store.view(),
                                                                                                  {}, capacity);
    const moe::train::BiasBalancer balancer{.gamma = 1e-3f};
    results.push_back(train("aux-free", layer, store, task, steps,
                            [&](const moe::RoutingStats& s) { balancer.update(store.selection_bias(), s); }));
  }
  {  // 5. expert choice: each expert its top-C tokens, C = 2 · T / E
    moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 5);
    using R = moe::Router<moe::ExpertChoice, moe::NoNoise, moe::SoftmaxTopKRaw>;
    const moe::MoELayer<R, moe::Expert<moe::SwiGLU>, moe::Dropless, moe::NoLoss, Cpu> layer(
        config, store.view(), R(moe::ExpertChoice{.capacity_factor = 2.0}));
    results.push_back(train("expert-choice", layer, store, task, steps));
  }

  std::printf("%d steps of %lld tokens, %lld clusters, %lld experts, Adam 3e-3, %d threads\n\n", steps,
              static_cast<long long>(batch), static_cast<long long>(num_clusters), static_cast<long long>(num_experts),
              Cpu().threads());
  std::printf("%-14s %10s %10s %8s %9s %8s %9s %9s %7s\n", "run", "loss@0", "loss", "load CV", "dropped", "no expert",
              "z (lse²)", "max|logit|", "time s");
  for (const Result& r : results)
    std::printf("%-14s %10.4f %10.4f %8.3f %8.1f%% %8.1f%% %9.3f %9.3f %7.2f\n", r.name.c_str(), r.first_loss, r.loss,
                r.load_cv, 100 * r.dropped, 100 * r.passed_through, r.z, r.max_logit, r.seconds);
  for (const Result& r : results) print_table(r);

  std::printf("\n");
  bool written = true;
  for (const Result& r : results) {
    const std::string path = out_dir + "/load_" + r.name + ".svg";
    written =
        written && example::write_line_chart(path, "per-expert load: " + r.name, "share of routed (token, slot) pairs",
                                             r.load, 0.5, 1.0 / double(num_experts));
    std::printf("wrote %s\n", path.c_str());
  }

  const Result &none = results[0], &sw = results[1], &swz = results[2], &free = results[3], &ec = results[4];
  example::expect(written, "wrote one SVG per run");
  bool learned = true;
  for (const Result& r : results) learned = learned && r.loss < 0.5 * r.first_loss;
  example::expect(learned, "every run at least halves its loss");
  example::expect(sw.load_cv < 0.75 * none.load_cv, "the Switch loss lowers the load CV");
  example::expect(free.load_cv < 0.75 * none.load_cv, "the aux-loss-free bias lowers the load CV");
  example::expect(ec.load_cv == 0.0, "expert choice: every expert takes exactly C tokens");
  example::expect(swz.z < sw.z, "the z-loss shrinks the router's logsumexp");
  return example::verdict();
}
