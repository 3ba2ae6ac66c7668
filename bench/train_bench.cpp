// One training step of an MoE layer (forward in training mode + backward,
// every gradient), beside the machine's FP32 FMA peak measured in the same
// run. The PyTorch peer is `python3 bench/torch_peer.py --train` (autograd
// through transformers' MixtralSparseMoeBlock on the same shape).
//
//   build/default/bin/moe-train-bench --benchmark_counters_tabular=true
//
// Shape `scaled` (d_model 1024, d_ff 3584, 8 experts, top-2, fp32 weights),
// T = 128 and 512 tokens. Counters: GFLOP/s of expert compute and of_peak.
// A step does 11 GEMM-sized products per kept row (forward 3; backward
// recomputes gate and up, then dW_down, dh, dW_up, dW_gate and dx twice),
// each 2 · d_model · d_ff flops.
#include <benchmark/benchmark.h>

#include <moe/moe.hpp>

#include <chrono>

#include "machine_limits.hpp"

namespace {

using moe::index_t;
constexpr index_t d_model = 1024, d_ff = 3584, experts = 8;

template <class Backend>
void train_step(benchmark::State& state) {
  const moe::LayerConfig c{.d_model = d_model, .d_ff = d_ff, .num_experts = experts, .seed = 1};
  static const moe::WeightStore store = moe::WeightStore::random(c, true, moe::DType::F32, 3);
  const auto layer = moe::make_layer<moe::presets::Mixtral>(c, store.view(), Backend{});
  const index_t T = state.range(0);
  const moe::Matrix x = moe::random_normal_matrix(T, d_model, 4), dy = moe::random_normal_matrix(T, d_model, 5);
  auto ws = layer.make_workspace();
  moe::LayerGrads g = layer.make_grads(T);
  std::uint64_t step = 0;
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    layer.forward(x, ws, {moe::Mode::train, step++});
    layer.backward(x, ws, dy, g);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(g.x.data());
  }
  const double flops = 11.0 * 2.0 * double(T * 2) * double(d_model) * double(d_ff);
  const double rate = flops * double(state.iterations()) / seconds;
  state.counters["GFLOP/s"] = rate / 1e9;
  if (moe_bench::limits().fp32_flops > 0) state.counters["of_peak"] = rate / moe_bench::limits().fp32_flops;
}

}  // namespace

int main(int argc, char** argv) {
  moe_bench::register_machine_limits();
  benchmark::RegisterBenchmark("train_step/scaled/cpu/f32", train_step<moe::backend::Cpu<>>)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->ArgName("T")
      ->Arg(128)
      ->Arg(512);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
