// moe-cuda-bench: backend::Cuda on the GPU beside the limits of the same GPU,
// measured in the same run: cuBLAS's dense bf16 GEMM at 8192³ (the practical
// tensor-core peak), the same GEMM shapes as the layer's experts at equal
// FLOPs (one dense expert of T·k rows), and the device's read bandwidth.
//
// Shapes: the Mixtral-8x7B layer (4096, 14336, 8 experts, top-2) and a
// fine-grained layer (2048, 768, 128 experts, top-8, as Qwen3-30B-A3B), T = 1,
// 8, 64, 512, 4096, 16384; bf16 weights, Bf16Compute numerics. Counters:
// TFLOP/s of the expert GEMMs (2·T·k·3·d·f), and at small T the GB/s of the
// chosen experts' weights (every distinct expert read once). The peers
// (PyTorch, transformers) are bench/cuda/torch_peers.py; device_check.sh runs
// both and prints the table (bench/cuda/report.py).
//
//   moe-cuda-bench [--benchmark_filter=...] [--benchmark_format=json]
#include <benchmark/benchmark.h>

#include <moe/backend/cuda.cuh>
#include <moe/moe.hpp>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>

using namespace moe;

namespace {

struct LayerShape {
  const char* name;
  index_t d, f, E;
  int k;
};
constexpr LayerShape mixtral_layer{"mixtral", 4096, 14336, 8, 2};
constexpr LayerShape fine_layer{"fine", 2048, 768, 128, 8};

/// Milliseconds of fn() on the device, wall clock around it and a stream sync.
template <class Fn>
double time_ms(Fn&& fn, cudaStream_t stream) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// Random bf16 weights for a layer shape, made on the host once per shape
/// (N(0, 1/d_in) as WeightStore::random; the router fp32).
const WeightStore& weights_for(const LayerShape& s) {
  static std::map<std::string, WeightStore> made;
  auto it = made.find(s.name);
  if (it == made.end()) {
    const LayerConfig c{.d_model = s.d, .d_ff = s.f, .num_experts = s.E, .seed = 7};
    it = made.emplace(s.name, WeightStore::random(c, true, DType::BF16, 7)).first;
  }
  return it->second;
}

template <int K>
void layer_forward(benchmark::State& state, LayerShape s) {
  const index_t T = state.range(0);
  const LayerConfig c{.d_model = s.d, .d_ff = s.f, .num_experts = s.E, .seed = 7};
  using R = Router<TopK<K>>;
  using Layer = MoELayer<R, Expert<SwiGLU>, Dropless, NoLoss, backend::Cuda<numerics::Bf16Compute>>;
  const Layer layer(c, weights_for(s).view());
  const cuda::DeviceMatrix x = cuda::DeviceMatrix::from_host(random_normal_matrix(T, s.d, 11));
  typename Layer::workspace_type ws;
  (void)layer.forward(x, ws);  // warm: buffers grown, cuBLAS heuristics cached
  double ms = 0;
  for (auto _ : state) {
    ms = time_ms([&] { (void)layer.forward(x, ws); }, ws.backend.stream);
    state.SetIterationTime(ms / 1e3);
  }
  std::set<std::int32_t> chosen(ws.out.routing.expert.begin(), ws.out.routing.expert.end());
  const double flops = 2.0 * double(T) * K * 3.0 * double(s.d) * double(s.f);
  const double expert_bytes = double(chosen.size()) * 3.0 * double(s.d) * double(s.f) * 2.0;
  state.counters["TFLOPs"] = benchmark::Counter(flops * state.iterations() / 1e12, benchmark::Counter::kIsRate);
  state.counters["expert_GBps"] =
      benchmark::Counter(expert_bytes * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["experts_read"] = double(chosen.size());
}

/// n values in [-1, 1) from a hash of their index: zeros would flatter the
/// tensor cores (less switching, higher clocks).
__global__ void fill_kernel(__nv_bfloat16* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15;
    h *= 0x85EBCA77u;
    h ^= h >> 13;
    p[i] = __float2bfloat16_rn(float(h >> 8) * 0x1p-23f - 1.0f);
  }
}

/// C [m, n] = A [m, k] · B [k, n] in bf16 with fp32 accumulation (cuBLAS), timed.
void dense_gemm(benchmark::State& state) {
  const index_t m = state.range(0), n = state.range(1), k = state.range(2);
  cuda::Buffer<__nv_bfloat16> a(std::size_t(m * k)), b(std::size_t(k * n));
  cuda::Buffer<float> c(std::size_t(m * n));
  fill_kernel<<<1024, 256>>>(a.data(), std::size_t(m * k), 1);
  fill_kernel<<<1024, 256>>>(b.data(), std::size_t(k * n), 2);
  cuda::check_launch("fill_kernel");
  cuda::BlasHandle h;
  const float one = 1.0f, zero = 0.0f;
  const auto run = [&] {
    MOE_CUDA_CHECK(cublasGemmEx(h.on(nullptr), CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), int(k), &one, b.data(),
                                CUDA_R_16BF, int(n), a.data(), CUDA_R_16BF, int(k), &zero, c.data(), CUDA_R_32F, int(n),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  run();
  for (auto _ : state) state.SetIterationTime(time_ms(run, nullptr) / 1e3);
  state.counters["TFLOPs"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k) * state.iterations() / 1e12,
                                                benchmark::Counter::kIsRate);
}

__global__ void read_kernel(const float4* __restrict__ p, std::size_t n, float* out) {
  float acc = 0.0f;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const float4 v = p[i];
    acc += v.x + v.y + v.z + v.w;
  }
  if (acc == 1234.5f) *out = acc;  // keeps the loads; never true for zeroed memory
}

/// The device's read bandwidth over 4 GiB (every byte read once per iteration).
void device_read(benchmark::State& state) {
  const std::size_t bytes = std::size_t(4) << 30, n = bytes / sizeof(float4);
  cuda::Buffer<float4> buf(n);
  cuda::Buffer<float> out(1);
  MOE_CUDA_CHECK(cudaMemset(buf.data(), 0, bytes));
  int sms = 0;
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const auto run = [&] {
    read_kernel<<<unsigned(sms * 8), 512>>>(buf.data(), n, out.data());
    cuda::check_launch("read_kernel");
  };
  run();
  for (auto _ : state) state.SetIterationTime(time_ms(run, nullptr) / 1e3);
  state.counters["GBps"] = benchmark::Counter(double(bytes) * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("moe-cuda-bench: no CUDA device here\n");
    return 77;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RegisterBenchmark("limits/read_4GiB", device_read)->UseManualTime()->Iterations(10);
  benchmark::RegisterBenchmark("limits/gemm_bf16", dense_gemm)
      ->UseManualTime()
      ->Args({8192, 8192, 8192})
      ->Iterations(20);
  const std::vector<std::int64_t> tokens = {1, 8, 64, 512, 4096, 16384};
  for (const std::int64_t T : tokens) {
    benchmark::RegisterBenchmark("mixtral/moe_cuda_bf16", layer_forward<2>, mixtral_layer)
        ->UseManualTime()
        ->Arg(T)
        ->Iterations(T >= 4096 ? 5 : 20);
    benchmark::RegisterBenchmark("fine/moe_cuda_bf16", layer_forward<8>, fine_layer)
        ->UseManualTime()
        ->Arg(T)
        ->Iterations(T >= 4096 ? 5 : 20);
    // Equal FLOPs as one dense expert over T·k rows: gate|up, then down.
    for (const LayerShape& s : {mixtral_layer, fine_layer}) {
      const std::int64_t rows = T * s.k;
      benchmark::RegisterBenchmark((std::string(s.name) + "/dense_equal_flops_gate_up").c_str(), dense_gemm)
          ->UseManualTime()
          ->Args({rows, 2 * s.f, s.d})
          ->Iterations(10);
      benchmark::RegisterBenchmark((std::string(s.name) + "/dense_equal_flops_down").c_str(), dense_gemm)
          ->UseManualTime()
          ->Args({rows, s.d, s.f})
          ->Iterations(10);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
