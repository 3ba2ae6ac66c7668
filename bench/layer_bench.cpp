// MoE layer forward: backend::Cpu against backend::Reference and against the
// way one writes it with plain Eigen (one GEMM per expert over gathered
// rows), on a Mixtral-shaped layer at a quarter of the width
// (d_model 1024, d_ff 3584, 8 experts, top-2).
//
//   build/default/bin/moe-bench --benchmark_counters_tabular=true
//
// Counters: GFLOP/s of expert compute (2 · 3 · d_model · d_ff per routed
// (token, slot) pair) and tokens/s. Compare the rows of one run: the machine
// is shared and absolute times alone say little.
#include <benchmark/benchmark.h>

#include <moe/moe.hpp>

namespace {

constexpr moe::index_t d_model = 1024, d_ff = 3584, experts = 8;
constexpr int k = 2;

struct Fixture {
  moe::LayerConfig config{.d_model = d_model, .d_ff = d_ff, .num_experts = experts, .seed = 1};
  moe::WeightStore weights;
  explicit Fixture(moe::DType dtype) : weights(moe::WeightStore::random(config, true, dtype, 1)) {}
  static const Fixture& get(moe::DType dtype) {
    static const Fixture f32(moe::DType::F32), bf16(moe::DType::BF16);
    return dtype == moe::DType::F32 ? f32 : bf16;
  }
};

moe::Matrix tokens(moe::index_t T) { return moe::random_normal_matrix(T, d_model, 7); }

void set_counters(benchmark::State& state, moe::index_t T) {
  const double flops = 2.0 * 3.0 * double(d_model) * double(d_ff) * double(T) * k;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
}

template <class Backend>
void BM_layer(benchmark::State& state, moe::DType dtype) {
  const moe::index_t T = state.range(0);
  const Fixture& f = Fixture::get(dtype);
  const auto layer = moe::make_layer<moe::presets::Mixtral, Backend>(f.config, f.weights.view());
  const moe::Matrix x = tokens(T);
  for (auto _ : state) benchmark::DoNotOptimize(layer.forward(x).y.data());
  set_counters(state, T);
}

/// The plain-Eigen peer: route with moe, then per expert gather its rows and
/// run three GEMMs (fp32 weights mapped as Eigen matrices).
void BM_eigen_per_expert(benchmark::State& state) {
  const moe::index_t T = state.range(0);
  const Fixture& f = Fixture::get(moe::DType::F32);
  const auto layer = moe::make_layer<moe::presets::Mixtral>(f.config, f.weights.view());
  const moe::LayerWeights w = f.weights.view();
  const moe::Matrix x = tokens(T);
  using Map = Eigen::Map<const moe::Matrix>;
  for (auto _ : state) {
    const moe::Routing r = layer.route(x);
    moe::Matrix y = moe::Matrix::Zero(T, d_model);
    for (moe::index_t e = 0; e < experts; ++e) {
      std::vector<moe::index_t> rows;
      std::vector<float> weight;
      for (moe::index_t t = 0; t < T; ++t)
        for (int j = 0; j < k; ++j)
          if (r.expert_at(t, j) == e) {
            rows.push_back(t);
            weight.push_back(r.weight_at(t, j));
          }
      if (rows.empty()) continue;
      moe::Matrix xe(moe::index_t(rows.size()), d_model);
      for (std::size_t i = 0; i < rows.size(); ++i) xe.row(moe::index_t(i)) = x.row(rows[i]);
      const auto& we = w.experts[std::size_t(e)];
      const Map w1(static_cast<const float*>(we.gate.data), d_ff, d_model),
          w3(static_cast<const float*>(we.up.data), d_ff, d_model),
          w2(static_cast<const float*>(we.down.data), d_model, d_ff);
      moe::Matrix h = xe * w1.transpose();
      h = h.unaryExpr([](float z) { return z / (1.0f + std::exp(-z)); }).cwiseProduct(xe * w3.transpose());
      const moe::Matrix out = h * w2.transpose();
      for (std::size_t i = 0; i < rows.size(); ++i) y.row(rows[i]) += weight[i] * out.row(moe::index_t(i));
    }
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, T);
}

void BM_cpu(benchmark::State& state, moe::DType dtype) { BM_layer<moe::backend::Cpu<>>(state, dtype); }
void BM_reference(benchmark::State& state, moe::DType dtype) { BM_layer<moe::backend::Reference>(state, dtype); }

}  // namespace

BENCHMARK_CAPTURE(BM_cpu, cpu_f32, moe::DType::F32)
    ->Arg(1)
    ->Arg(32)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_cpu, cpu_bf16, moe::DType::BF16)
    ->Arg(1)
    ->Arg(32)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_eigen_per_expert)->Arg(1)->Arg(32)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_reference, reference_f32, moe::DType::F32)
    ->Arg(1)
    ->Arg(32)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
