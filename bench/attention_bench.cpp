// Attention at Mixtral's heads (32 query, 8 kv, head 128): the scores,
// softmax and weighted sum of moe::attend on backend::Cpu (blocked, SIMD,
// threaded, bench/attention_peer.py times PyTorch's SDPA on the same
// problems), and the reference loops where they finish in reasonable time.
//
//   build/default/bin/moe-attention-bench --benchmark_counters_tabular=true
//
// prefill/S:N  N new tokens on an empty cache, causal; at 8192 with the
//              sliding window of 4096 (Mistral's).
// decode/cache:N  one token over N cached keys: reads N·8·128·2 floats of
//              cache (`GB/s`, `of_read` against limit/memory_read), from
//              copies of the cache 1 GiB in all, taken in turn (so from
//              memory, not from the last-level cache).
// `GFLOP/s` counts 4·hd flops per (query head, visible key): q·k and p·v.
#include <benchmark/benchmark.h>

#include <moe/moe.hpp>

#include "machine_limits.hpp"

#include <optional>
#include <string>
#include <vector>

namespace {

struct Problem {
  moe::AttentionShape shape;
  moe::Matrix q, k, v, context;
  std::vector<moe::index_t> positions;
  std::vector<moe::KeyValueRun> runs;
  moe::index_t first = 0;
  double flops = 0;  ///< useful flops of one call
  double kv_bytes = 0;
  std::vector<float, moe::detail::StreamAllocator<float>> keys, values;  ///< a copy's cache (k, v unused)

  /// S query rows at positions cached.., over cached + S keys at 0..
  Problem(moe::index_t S, moe::index_t cached, std::optional<moe::index_t> window)
      : shape{32, 8, 128, window},
        q(moe::random_normal_matrix(S, 32 * 128, 1)),
        k(moe::random_normal_matrix(cached + S, 8 * 128, 2)),
        v(moe::random_normal_matrix(cached + S, 8 * 128, 3)),
        context(S, 32 * 128),
        first(cached) {
    const moe::index_t N = cached + S;
    for (moe::index_t j = 0; j < N; ++j) positions.push_back(j);
    runs.push_back({k.data(), v.data(), positions.data(), N});
    double pairs = 0;
    for (moe::index_t t = 0; t < S; ++t) {
      const moe::index_t pos = cached + t;
      pairs += double(window ? std::min(pos + 1, *window) : pos + 1);
    }
    flops = pairs * shape.num_heads * shape.head_dim * 4;
    kv_bytes = double(N) * 8 * 128 * 2 * sizeof(float);
  }
  Problem(const Problem& other)
      : shape(other.shape),
        q(other.q),
        k(other.k),
        v(other.v),
        context(other.context),
        positions(other.positions),
        first(other.first),
        flops(other.flops),
        kv_bytes(other.kv_bytes),
        keys(other.k.data(), other.k.data() + other.k.size()),
        values(other.v.data(), other.v.data() + other.v.size()) {
    // Its own copy of the keys and values, on huge pages as LayerKvCache's.
    runs.push_back({keys.data(), values.data(), positions.data(), k.rows()});
  }
  Problem& operator=(const Problem&) = delete;

  moe::AttentionProblem problem() {
    return {.shape = shape, .q = q, .first = first, .runs = runs, .kv_stride = k.cols(), .context = context};
  }
};

void counters(benchmark::State& state, const Problem& p);

template <class Attend>
void run(benchmark::State& state, Problem& p, Attend attend) {
  const moe::AttentionProblem problem = p.problem();
  for (auto _ : state) {
    attend(problem);
    benchmark::DoNotOptimize(p.context.data());
  }
  counters(state, p);
}

void counters(benchmark::State& state, const Problem& p) {
  state.counters["GFLOP/s"] = benchmark::Counter(p.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (moe_bench::limits().fp32_flops > 0)
    state.counters["of_fma"] =
        benchmark::Counter(p.flops / moe_bench::limits().fp32_flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(p.kv_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (moe_bench::limits().read_bytes > 0)
    state.counters["of_read"] =
        benchmark::Counter(p.kv_bytes / moe_bench::limits().read_bytes, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_prefill(benchmark::State& state) {
  const moe::index_t S = state.range(0);
  Problem p(S, 0, S > 4096 ? std::optional<moe::index_t>(4096) : std::nullopt);
  const moe::backend::Cpu<> cpu;
  run(state, p, [&](const moe::AttentionProblem& a) { cpu.attend(a); });
}

void BM_decode(benchmark::State& state) {
  // Copies of the cache, 1 GiB in all, taken in turn: each call reads its
  // cache from memory, not from a last-level cache that holds 64 MiB.
  std::vector<Problem> copies{Problem(1, state.range(0) - 1, std::nullopt)};
  while (double(copies.size()) * copies[0].kv_bytes < double(1 << 30)) copies.push_back(copies[0]);
  std::vector<moe::AttentionProblem> problems;
  for (Problem& p : copies) problems.push_back(p.problem());
  const moe::backend::Cpu<> cpu;
  std::size_t i = 0;
  for (auto _ : state) {
    cpu.attend(problems[i++ % problems.size()]);
    benchmark::DoNotOptimize(copies[0].context.data());
  }
  counters(state, copies[0]);
}

void BM_reference(benchmark::State& state) {
  Problem p(state.range(0), 0, std::nullopt);
  run(state, p, [](const moe::AttentionProblem& a) { moe::attend_reference(a); });
}

}  // namespace

int main(int argc, char** argv) {
  moe_bench::register_machine_limits();
  benchmark::RegisterBenchmark("attention/prefill", BM_prefill)
      ->ArgName("S")
      ->Arg(512)
      ->Arg(2048)
      ->Arg(8192)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("attention/decode", BM_decode)
      ->ArgName("cache")
      ->Arg(8192)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("attention/reference", BM_reference)
      ->ArgName("S")
      ->Arg(512)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
