// MoE layer forward on the shapes people run, side by side with its peers
// and with the machine's limits measured in the same run.
//
//   build/default/bin/moe-bench --benchmark_counters_tabular=true
//   python3 bench/report.py            # runs this and the PyTorch peer, prints the table
//
// Shapes (T = tokens per call):
//   mixtral   Mixtral-8x7B layer: d_model 4096, d_ff 14336, 8 experts, top-2
//   scaled    the same at a quarter width: 1024, 3584, 8, top-2
//   fine      fine-grained experts: 1024, 896, 64 experts, top-8 (same active compute as scaled)
//   skewed    scaled, with a router that sends every token to expert 0 (half of all rows)
// Implementations:
//   packed    backend::Cpu after layer.pack_weights(): the panel kernel
//   views     backend::Cpu on the weight views (no packing, what an mmap'ed checkpoint runs)
//   eigen     the plain-Eigen way: route with moe, one GEMM per expert over its gathered rows
//             (Eigen's GEMM on all cores through OpenMP when the build has it)
//   reference backend::Reference (scaled shape, T ≤ 8: it is the readable truth, not fast)
//   packed-avx2  packed, with the kernels forced to isa::Avx2 (registered when the build's
//             native ISA is higher): what the same binary gives an AVX2-only CPU's code path
//   eigengemm backend::EigenGemm: each expert's rows as three Eigen GEMMs on moe's pool
// numerics (the 4th name part):
//   f32    fp32 weights, fp32 compute                  (backend::Cpu<>)
//   bf16   bf16 weights, fp32 activations and compute  (backend::Cpu<>)
//   bf16c  bf16 compute: activations rounded to bf16   (backend::Cpu<numerics::Bf16Compute>);
//          on AVX512-BF16 also `packed-dot` (vdpbf16ps forced) and `packed-fma`
//          (fp32 FMAs on bf16 panels forced): `packed` runs what the CPU prefers
//   int8   int8 weights, 7-bit activations, int32 sums (backend::Cpu<numerics::Int8>)
//   q8_0, q4_0, q4_k   GGUF block weights (views only, as a GGUF file is run), activations
//          quantised per block as llama.cpp does (backend::Cpu<numerics::BlockQ8>);
//          bench/llama_cpp_peer.py times the same types beside llama.cpp itself
//
// Counters: GFLOP/s of expert compute (2 · projections · d_model · d_ff per
// kept row; GOP/s for int8), of_peak (÷ the FP32 FMA peak of limit/fp32_fma,
// or the int8 peak of limit/int8_dot), weight_GB/s (bytes of the experts the
// call touched ÷ time: what decode streams), of_bandwidth (÷
// limit/memory_read) and, for T ≤ 8, of_read_now (÷ the better of two read
// passes taken just before and just after the row: the machine's bandwidth
// drifts during a run).
#include <benchmark/benchmark.h>

#include <moe/moe.hpp>
#include <moe/quant/ggml_blocks.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include "machine_limits.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using moe::index_t;

struct Shape {
  const char* name;
  index_t d_model, d_ff, experts;
  int k;
  bool skewed;
};

constexpr Shape shapes[] = {
    {"mixtral", 4096, 14336, 8, 2, false},
    {"scaled", 1024, 3584, 8, 2, false},
    {"fine", 1024, 896, 64, 8, false},
    {"skewed", 1024, 3584, 8, 2, true},
};
constexpr index_t token_counts[] = {1, 8, 32, 128, 512, 2048};

/// Fills bytes with uniform values of variance 1/cols (as N(0, 1/cols) in
/// scale): a fast xorshift in place of the library's Philox normals, since a
/// Mixtral layer has 1.4 G weights and their values do not change the speed.
void fill_uniform(std::vector<unsigned char>& bytes, moe::DType dtype, index_t cols, std::uint64_t seed) {
  const std::size_t width = moe::size_of(dtype), n = bytes.size() / width;
  const float a = std::sqrt(3.0f / float(cols));
  const unsigned threads = moe_bench::hardware_threads();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + t + 1;
      for (std::size_t i = n / threads * t, end = t + 1 == threads ? n : n / threads * (t + 1); i < end; ++i) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        const float u = float(s >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        moe::detail::store_as(dtype, a * (2 * u - 1), bytes.data() + i * width);
      }
    });
  for (auto& p : pool) p.join();
}

/// GGUF's code of a block dtype the benchmark writes.
std::uint32_t ggml_code(moe::DType dtype) {
  switch (dtype) {
    case moe::DType::Q8_0:
      return 8;
    case moe::DType::Q4_0:
      return 2;
    default:
      return 12;  // Q4_K
  }
}

/// rows x cols of a block dtype: 64 rows of uniform values (as
/// fill_uniform) quantised, repeated: the quantiser is too slow for a
/// Mixtral layer's 1.4 G weights, and the values do not change the speed.
void fill_blocks(std::vector<unsigned char>& bytes, moe::DType dtype, index_t rows, index_t cols, std::uint64_t seed) {
  const index_t row_bytes = moe::bytes_of(dtype, cols), distinct = std::min<index_t>(rows, 64);
  std::vector<unsigned char> floats(std::size_t(distinct * cols) * sizeof(float));
  fill_uniform(floats, moe::DType::F32, cols, seed);
  moe::quant::quantize(ggml_code(dtype), moe::name(dtype), reinterpret_cast<const float*>(floats.data()),
                       distinct * cols, bytes.data());
  for (index_t r = distinct; r < rows; ++r)
    std::memcpy(bytes.data() + r * row_bytes, bytes.data() + (r % distinct) * row_bytes, std::size_t(row_bytes));
}

/// One shape's weights in one dtype, and a Cpu backend that may hold them packed.
struct Fixture {
  Shape shape;
  moe::DType dtype;
  moe::LayerConfig config;
  std::vector<std::vector<unsigned char>> buffers;
  moe::LayerWeights weights;
  std::map<std::string, std::shared_ptr<void>> layers;  ///< prepared layers by backend/k/packing (cached_layer)

  Fixture(const Shape& s, moe::DType dt)
      : shape(s), dtype(dt), config{.d_model = s.d_model, .d_ff = s.d_ff, .num_experts = s.experts, .seed = 1} {
    const auto add = [&](moe::DType d, index_t rows, index_t cols) {
      buffers.emplace_back(std::size_t(rows * moe::bytes_of(d, cols)));
      if (moe::is_block_quantised(d))
        fill_blocks(buffers.back(), d, rows, cols, buffers.size());
      else
        fill_uniform(buffers.back(), d, cols, buffers.size());
      return moe::WeightMatrix{buffers.back().data(), d, rows, cols};
    };
    weights.router.gate = add(moe::DType::F32, s.experts, s.d_model);
    if (s.skewed) {  // x[:, 0] is set to 1 below: expert 0's logit gains 20, it wins every token
      float g0;
      std::memcpy(&g0, buffers.back().data(), sizeof g0);
      g0 += 20.0f;
      std::memcpy(buffers.back().data(), &g0, sizeof g0);
    }
    for (index_t e = 0; e < s.experts; ++e) {
      moe::ExpertWeights w;
      w.gate = add(dt, s.d_ff, s.d_model);
      w.up = add(dt, s.d_ff, s.d_model);
      w.down = add(dt, s.d_model, s.d_ff);
      weights.experts.push_back(w);
    }
  }

  moe::Matrix tokens(index_t T, std::uint64_t seed = 7) const {
    moe::Matrix x = moe::random_normal_matrix(T, shape.d_model, seed);
    if (shape.skewed) x.col(0).setOnes();
    return x;
  }

  /// Holds one fixture at a time: the Mixtral shape alone is 5.6 GB in fp32
  /// (and as much again packed).
  static Fixture& get(const Shape& s, moe::DType dt) {
    static std::unique_ptr<Fixture> current;
    if (!current || current->shape.name != s.name || current->dtype != dt) {
      current.reset();
      current = std::make_unique<Fixture>(s, dt);
    }
    return *current;
  }
};

template <int K>
using Preset = moe::presets::MixtralTopK<K>;

/// Runs fn once per benchmark iteration; returns the mean seconds per call.
template <class Fn>
double timed_loop(benchmark::State& state, Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) fn();
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return total / double(std::max<benchmark::IterationCount>(1, state.iterations()));
}

/// Sets the counters every layer benchmark reports, from one routing of x
/// and the seconds one forward call took.
void set_counters(benchmark::State& state, const Fixture& f, const moe::RoutingPlan& plan, double seconds,
                  double bytes_per_weight, bool int8, double read_now = 0.0) {
  const double rows = double(plan.rows()), d = double(f.shape.d_model), ff = double(f.shape.d_ff);
  const double flops = 2.0 * 3.0 * d * ff * rows;
  index_t touched = 0;
  for (index_t e = 0; e < plan.experts; ++e) touched += plan.kept(e) > 0;
  const double bytes = 3.0 * d * ff * double(touched) * bytes_per_weight;
  const auto& lim = moe_bench::limits();
  const auto fraction = [](double rate, double limit) { return limit > 0 ? rate / limit : 0.0; };
  state.counters["T"] = double(plan.tokens);
  state.counters["GFLOP/s"] = flops / seconds * 1e-9;
  state.counters["of_peak"] = fraction(flops / seconds, int8 ? lim.int8_ops : lim.fp32_flops);
  state.counters["weight_GB/s"] = bytes / seconds * 1e-9;
  state.counters["of_bandwidth"] = fraction(bytes / seconds, lim.read_bytes);
  if (read_now > 0) state.counters["of_read_now"] = fraction(bytes / seconds, read_now);
  state.counters["max_expert_rows"] = [&] {
    index_t m = 0;
    for (index_t e = 0; e < plan.experts; ++e) m = std::max(m, plan.kept(e));
    return double(m);
  }();
}

enum class Impl { packed, packed_avx2, views, bf16c, bf16c_dot, bf16c_fma, int8, block_q8, reference, eigengemm };

/// MOE_BF16_DOT set for the scope (the bf16 compute rows that force
/// vdpbf16ps or fp32 FMAs, whatever this CPU prefers), restored after.
class ForcedBf16Dot {
 public:
  explicit ForcedBf16Dot(bool dot) {
    if (const char* v = std::getenv("MOE_BF16_DOT")) before_ = v;
    ::setenv("MOE_BF16_DOT", dot ? "1" : "0", 1);
  }
  ~ForcedBf16Dot() {
    if (before_)
      ::setenv("MOE_BF16_DOT", before_->c_str(), 1);
    else
      ::unsetenv("MOE_BF16_DOT");
  }
  ForcedBf16Dot(const ForcedBf16Dot&) = delete;
  ForcedBf16Dot& operator=(const ForcedBf16Dot&) = delete;

 private:
  std::optional<std::string> before_;
};

/// One layer per (fixture, backend, k, packing), built and prepared once and
/// kept by the fixture (it dies with the weights it views): the panels (or
/// bf16/int8 copies) are the layer's, and packing a Mixtral-sized layer
/// takes seconds, so every T of a benchmark reuses them.
template <int K, class Backend>
const moe::PresetLayer<Preset<K>, Backend>& cached_layer(Fixture& f, const Backend& backend, bool pack,
                                                         const std::string& variant) {
  using Layer = moe::PresetLayer<Preset<K>, Backend>;
  const std::string key =
      std::string(typeid(Backend).name()) + "/k" + std::to_string(K) + (pack ? "/packed" : "/views") + variant;
  std::shared_ptr<void>& slot = f.layers[key];
  if (!slot) {
    auto layer = std::make_shared<Layer>(moe::make_layer<Preset<K>, Backend>(f.config, f.weights, backend));
    if (pack) layer->pack_weights();
    slot = layer;
  }
  return *std::static_pointer_cast<const Layer>(slot);
}

template <int K, class Backend>
void time_layer(benchmark::State& state, Fixture& f, const Backend& backend, bool pack, double bytes_per_weight,
                bool int8, const std::string& variant = "") {
  const auto& layer = cached_layer<K>(f, backend, pack, variant);
  // Decode-sized calls cycle through 16 inputs, so the experts change from
  // call to call as in generation, and a small shape's two experts cannot
  // sit in the last-level cache between calls.
  const index_t T = state.range(0);
  std::vector<moe::Matrix> inputs;
  for (std::uint64_t i = 0; i < (T <= 8 ? 16u : 1u); ++i) inputs.push_back(f.tokens(T, 7 + i));
  auto ws = layer.make_workspace();                                 // reused by every call, as a serving loop would
  const moe::RoutingPlan plan = layer.forward(inputs[0], ws).plan;  // warm-up, and the plan for the counters
  std::size_t call = 0;
  const double read_before = T <= 8 ? moe_bench::read_rate_now() : 0.0;
  const double seconds =
      timed_loop(state, [&] { benchmark::DoNotOptimize(layer.forward(inputs[call++ % inputs.size()], ws).y.data()); });
  const double read_after = T <= 8 ? moe_bench::read_rate_now() : 0.0;
  set_counters(state, f, plan, seconds, bytes_per_weight, int8, std::max(read_before, read_after));
}

template <int K>
void run_layer(benchmark::State& state, const Shape& s, moe::DType dt, Impl impl) {
  Fixture& f = Fixture::get(s, dt);
  const double stored = double(moe::bytes_of(dt, 256)) / 256.0;
  switch (impl) {
    case Impl::packed:
      return time_layer<K>(state, f, moe::backend::Cpu<>(), true, stored, false);
    case Impl::views:
      return time_layer<K>(state, f, moe::backend::Cpu<>(), false, stored, false);
    case Impl::bf16c:
      return time_layer<K>(state, f, moe::backend::Cpu<moe::numerics::Bf16Compute>(), true, 2.0, false);
    case Impl::bf16c_dot:
    case Impl::bf16c_fma: {
      const ForcedBf16Dot force(impl == Impl::bf16c_dot);
      return time_layer<K>(state, f, moe::backend::Cpu<moe::numerics::Bf16Compute>(), true, 2.0, false,
                           impl == Impl::bf16c_dot ? "/dot" : "/fma");
    }
    case Impl::int8:
      return time_layer<K>(state, f, moe::backend::Cpu<moe::numerics::Int8>(), true, 1.0, true);
    case Impl::block_q8:
      return time_layer<K>(state, f, moe::backend::Cpu<moe::numerics::BlockQ8>(), false, stored, true);
    case Impl::reference:
      return time_layer<K>(state, f, moe::backend::Reference{}, false, stored, false);
    case Impl::eigengemm:
      return time_layer<K>(state, f, moe::backend::EigenGemm(), false, stored, false);
    case Impl::packed_avx2:
#if XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2
      return time_layer<K>(state, f, moe::backend::Cpu<moe::numerics::AsStored, moe::isa::Avx2>(), true, stored, false);
#else
      return state.SkipWithError("this build carries no AVX2 kernels");
#endif
  }
}

/// The plain-Eigen peer: route with moe, then per expert gather its rows and
/// run three GEMMs (fp32 weights mapped as Eigen matrices).
template <int K>
void run_eigen(benchmark::State& state, const Shape& s) {
  Fixture& f = Fixture::get(s, moe::DType::F32);
  const index_t T = state.range(0), d = s.d_model, ff = s.d_ff;
  const auto layer = moe::make_layer<Preset<K>>(f.config, f.weights);
  const moe::Matrix x = f.tokens(T);
  using Map = Eigen::Map<const moe::Matrix>;
  const auto forward = [&] {
    const moe::Routing r = layer.route(x);
    moe::Matrix y = moe::Matrix::Zero(T, d);
    for (index_t e = 0; e < s.experts; ++e) {
      std::vector<index_t> rows;
      std::vector<float> weight;
      for (index_t t = 0; t < T; ++t)
        for (int j = 0; j < K; ++j)
          if (r.expert_at(t, j) == e) {
            rows.push_back(t);
            weight.push_back(r.weight_at(t, j));
          }
      if (rows.empty()) continue;
      moe::Matrix xe(index_t(rows.size()), d);
      for (std::size_t i = 0; i < rows.size(); ++i) xe.row(index_t(i)) = x.row(rows[i]);
      const auto& we = f.weights.experts[std::size_t(e)];
      const Map w1(static_cast<const float*>(we.gate.data), ff, d), w3(static_cast<const float*>(we.up.data), ff, d),
          w2(static_cast<const float*>(we.down.data), d, ff);
      moe::Matrix h = xe * w1.transpose();
      h = h.unaryExpr([](float z) { return z / (1.0f + std::exp(-z)); }).cwiseProduct(xe * w3.transpose());
      const moe::Matrix out = h * w2.transpose();
      for (std::size_t i = 0; i < rows.size(); ++i) y.row(rows[i]) += weight[i] * out.row(index_t(i));
    }
    return y;
  };
  forward();
  const double seconds = timed_loop(state, [&] { benchmark::DoNotOptimize(forward().data()); });
  set_counters(state, f, layer.forward(x).plan, seconds, 4.0, false);
}

template <int K>
void register_shape(const Shape& s) {
  const auto reg = [&](const std::string& impl, const std::string& numerics, auto fn, index_t max_T) {
    const std::string name = std::string("layer/") + s.name + "/" + impl + "/" + numerics;
    auto* b = benchmark::RegisterBenchmark(name.c_str(), fn)->Unit(benchmark::kMillisecond)->UseRealTime();
    b->ArgName("T");
    for (index_t T : token_counts)
      if (T <= max_T) b->Arg(T);
  };
  const auto layer = [s](moe::DType dt, Impl impl) {
    return [s, dt, impl](benchmark::State& st) { run_layer<K>(st, s, dt, impl); };
  };
  using moe::DType;
  // Grouped by fixture (shape, stored dtype): one set of weights in memory at a time.
  reg("packed", "f32", layer(DType::F32, Impl::packed), 2048);
  reg("views", "f32", layer(DType::F32, Impl::views), 2048);
  reg(
      "eigen", "f32", [s](benchmark::State& st) { run_eigen<K>(st, s); }, 2048);
  if (std::string(s.name) == "scaled") reg("reference", "f32", layer(DType::F32, Impl::reference), 8);
  reg("eigengemm", "f32", layer(DType::F32, Impl::eigengemm), 2048);
  if (moe::isa::Native::level > int(moe::isa::Level::avx2))
    reg("packed-avx2", "f32", layer(DType::F32, Impl::packed_avx2), 2048);
  reg("packed", "bf16", layer(DType::BF16, Impl::packed), 2048);
  reg("views", "bf16", layer(DType::BF16, Impl::views), 2048);
  reg("packed", "bf16c", layer(DType::BF16, Impl::bf16c), 2048);
  if (moe::isa::Native::bf16) {  // each bf16 compute kernel, whichever this CPU prefers (isa::bf16_dot_preferred)
    reg("packed-dot", "bf16c", layer(DType::BF16, Impl::bf16c_dot), 2048);
    reg("packed-fma", "bf16c", layer(DType::BF16, Impl::bf16c_fma), 2048);
  }
  reg("packed", "int8", layer(DType::BF16, Impl::int8), 2048);
  reg("views", "q8_0", layer(DType::Q8_0, Impl::block_q8), 2048);
  reg("views", "q4_0", layer(DType::Q4_0, Impl::block_q8), 2048);
  reg("views", "q4_k", layer(DType::Q4_K, Impl::block_q8), 2048);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(_OPENMP)
  omp_set_num_threads(int(moe_bench::hardware_threads()));
#endif
  moe_bench::register_machine_limits();
  for (const Shape& s : shapes) {
    if (s.k == 2)
      register_shape<2>(s);
    else
      register_shape<8>(s);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
