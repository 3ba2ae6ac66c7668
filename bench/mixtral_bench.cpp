// The Mixtral decoder end to end: prefill and decode tokens/s on a
// Mixtral-shaped model scaled to this machine (hidden 1024, 8 experts top-2,
// expert width 3584, 4 layers, 8 query / 2 kv heads of 128, vocab 32000),
// with bf16 and fp32 weights, made by moe's own checkpoint writer.
//
//   build/default/bin/moe-mixtral-bench --benchmark_counters_tabular=true
//
// Decode is memory-bound: each token reads the attention weights, the router
// and its k experts of every layer, and lm_head. `bytes/token` counts them;
// `GB/s` = bytes/token × tokens/s is the weight traffic the decoder achieved
// and `of_peak` divides it by the read bandwidth limit/memory_read measures
// (`of_read_now`: by a read pass taken just before and after the row)
// in the same run (machine_limits.hpp). `views` runs on the mapped
// checkpoint; `packed` after Model::pack_experts() (the panel kernel).
#include <benchmark/benchmark.h>

#include <moe/moe.hpp>

#include "machine_limits.hpp"

#include <chrono>
#include <filesystem>
#include <thread>

namespace mx = moe::mixtral;
namespace fs = std::filesystem;

namespace {

mx::Config bench_config(moe::DType dtype) {
  mx::Config c;
  c.vocab_size = 32000;
  c.hidden_size = 1024;
  c.intermediate_size = 3584;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.num_experts = 8;
  c.experts_per_token = 2;
  c.max_positions = 4096;
  c.dtype = dtype;
  return c;
}

/// The checkpoint folder for `dtype`, written on first use (seeded: the same
/// bytes every time) and reused by later runs.
fs::path checkpoint(moe::DType dtype) {
  const fs::path dir = fs::path(MOE_BENCH_DIR) / ("mixtral-bench-" + std::string(moe::name(dtype)));
  if (!fs::exists(dir / "config.json")) mx::write_random_checkpoint(dir, bench_config(dtype), 1);
  return dir;
}

/// The model on the weight views, or (packed) with its experts packed into
/// panels by Model::pack_experts().
const mx::Model<>& model(moe::DType dtype, bool packed = false) {
  static const mx::Model<> f32(checkpoint(moe::DType::F32)), bf16(checkpoint(moe::DType::BF16));
  static mx::Model<> f32_packed(checkpoint(moe::DType::F32)), bf16_packed(checkpoint(moe::DType::BF16));
  static const bool once = (f32_packed.pack_experts(), bf16_packed.pack_experts(), true);
  (void)once;
  if (packed) return dtype == moe::DType::F32 ? f32_packed : bf16_packed;
  return dtype == moe::DType::F32 ? f32 : bf16;
}

std::vector<std::int32_t> prompt(moe::index_t n) {
  std::vector<std::int32_t> ids;
  for (moe::index_t i = 0; i < n; ++i) ids.push_back(std::int32_t((i * 7919 + 13) % 32000));
  return ids;
}

/// Weight bytes one decoded token reads: per layer q, k, v, o, the router
/// and k experts (top-k distinct experts), then lm_head and an embedding row.
double bytes_per_token(const mx::Config& c) {
  const double b = double(moe::size_of(*c.dtype)), H = double(c.hidden_size), F = double(c.intermediate_size);
  const double attention = H * double(c.q_width()) * 2 + H * double(c.kv_width()) * 2;
  const double experts = double(c.experts_per_token) * 3 * H * F;
  const double per_layer = attention + double(c.num_experts) * H + experts;
  return b * (double(c.num_layers) * per_layer + double(c.vocab_size) * H + H);
}

void BM_prefill(benchmark::State& state, moe::DType dtype, bool packed) {
  const mx::Model<>& m = model(dtype, packed);
  const auto ids = prompt(state.range(0));
  for (auto _ : state) {
    mx::KvCache cache = m.new_cache();
    benchmark::DoNotOptimize(m.forward(ids, cache, mx::Logits::last).logits.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(ids.size()), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_decode(benchmark::State& state, moe::DType dtype, bool packed) {
  const mx::Model<>& m = model(dtype, packed);
  mx::KvCache cache = m.new_cache();
  const auto ids = prompt(state.range(0));
  mx::StepOutput step = m.forward(ids, cache, mx::Logits::last);  // the prompt, not timed
  const double read_before = moe_bench::read_rate_now();
  for (auto _ : state) {
    if (cache.next_position() + 1 >= m.config().max_positions) state.SkipWithError("context full");
    const std::int32_t next = mx::argmax({step.logits.data(), std::size_t(m.config().vocab_size)});
    step = m.forward(std::span(&next, 1), cache, mx::Logits::last);
  }
  const double bytes = bytes_per_token(m.config());
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes/token"] = bytes;
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const double bandwidth = moe_bench::limits().read_bytes;
  if (bandwidth > 0)
    state.counters["of_peak"] = benchmark::Counter(bytes / bandwidth, benchmark::Counter::kIsIterationInvariantRate);
  // Beside a read pass taken just before and after: the bandwidth drifts during a run.
  const double read_now = std::max(read_before, moe_bench::read_rate_now());
  state.counters["of_read_now"] = benchmark::Counter(bytes / read_now, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  moe_bench::register_machine_limits();
  for (const bool packed : {false, true})
    for (const moe::DType dtype : {moe::DType::BF16, moe::DType::F32}) {
      const std::string suffix =
          std::string(dtype == moe::DType::BF16 ? "bf16" : "f32") + (packed ? "/packed" : "/views");
      benchmark::RegisterBenchmark(("prefill/" + suffix).c_str(), BM_prefill, dtype, packed)
          ->Arg(128)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), BM_decode, dtype, packed)
          ->Arg(32)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
