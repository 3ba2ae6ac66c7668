#pragma once
// The machine's limits, measured in the same run as the benchmarks that are
// compared with them: FP32 FMA peak, bf16 dot-product peak (where the CPU has
// a bf16 dot instruction), int8 dot-product peak and DRAM read bandwidth.
// Register them first (`register_machine_limits()` before the others): Google
// Benchmark runs benchmarks in registration order, and later benchmarks read
// `limits()` to print each figure as a fraction of the limit.
//
// Each limit runs on every hardware thread at once (std::thread, one loop
// per thread) and keeps the best of its iterations and repetitions: the
// ceiling, not the typical value. In a multi-ISA program each copy measures
// what its own instructions reach (the baseline copy: SSE2).
#include <benchmark/benchmark.h>

#include <immintrin.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace moe_bench {

struct MachineLimits {
  double fp32_flops = 0;  ///< FP32 FMA peak, flop/s (an FMA is 2 flops)
  double bf16_flops = 0;  ///< native bf16 dot-product peak, flop/s; 0 if the CPU has none
  double int8_ops = 0;    ///< int8 dot-product peak, op/s (a multiply-add is 2 ops)
  double read_bytes = 0;  ///< DRAM read bandwidth, bytes/s
  std::string int8_instruction;
};

inline MachineLimits& limits() {
  static MachineLimits l;
  return l;
}

inline unsigned hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

/// Seconds for `body(thread)` run on every thread at once (the slowest thread).
inline double time_on_all_threads(const std::function<void(unsigned)>& body) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < hardware_threads(); ++t) pool.emplace_back(body, t);
  body(0);
  for (auto& p : pool) p.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Runs `body` once per benchmark iteration; returns `work` (per thread, per
/// run) ÷ the best time, summed over threads, and sets the rate counter.
inline double best_rate(benchmark::State& state, double work_per_thread, const char* counter,
                        const std::function<void(unsigned)>& body) {
  double best = 1e30;
  for (auto _ : state) best = std::min(best, time_on_all_threads(body));
  const double rate = work_per_thread * hardware_threads() / best;
  state.counters[counter] = rate * 1e-9;
  return rate;
}

constexpr long peak_iterations = 20'000'000;
volatile float sink_f = 0;
volatile int sink_i = 0;

/// 12 independent FMA chains: enough to cover FMA latency × pipes on any
/// x86 core of the last decade. The loops are unrolled so the chains live in
/// registers (an array indexed in a rolled loop would live in memory).
#if defined(__AVX512F__)
using fvec = __m512;
constexpr double fma_lanes = 16;
inline fvec fset1(float v) { return _mm512_set1_ps(v); }
inline fvec ffma(fvec a, fvec b, fvec c) { return _mm512_fmadd_ps(a, b, c); }
inline float flane0(fvec v) { return _mm512_cvtss_f32(v); }
#elif defined(__AVX2__) && defined(__FMA__)
using fvec = __m256;
constexpr double fma_lanes = 8;
inline fvec fset1(float v) { return _mm256_set1_ps(v); }
inline fvec ffma(fvec a, fvec b, fvec c) { return _mm256_fmadd_ps(a, b, c); }
inline float flane0(fvec v) { return _mm256_cvtss_f32(v); }
#else  // the baseline copy of a multi-ISA program: SSE2 has no FMA, a multiply and an add
using fvec = __m128;
constexpr double fma_lanes = 4;
inline fvec fset1(float v) { return _mm_set1_ps(v); }
inline fvec ffma(fvec a, fvec b, fvec c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
inline float flane0(fvec v) { return _mm_cvtss_f32(v); }
#endif

inline void fma_loop(unsigned) {
  fvec acc[12];
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) acc[i] = fset1(float(i));
  const fvec m = fset1(0.999999f), a = fset1(1e-7f);
  for (long it = 0; it < peak_iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = ffma(acc[i], m, a);
  }
  float s = 0;
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) s += flane0(acc[i]);
  sink_f = s;
}

/// int8 dot products as the int8 kernels issue them: VNNI's vpdpbusd where
/// the CPU has it, otherwise AVX2's vpmaddubsw + vpmaddwd + vpaddd (SSE2's
/// pmaddwd on 16-bit pairs in a baseline copy).
#if defined(__AVX2__)
constexpr double int8_pairs_per_instruction = 32;  // byte pairs per vpdpbusd / vpmaddubsw group (256-bit)
inline void int8_loop(unsigned) {
  __m256i acc[12];
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_epi32(i);
  const __m256i b = _mm256_set1_epi8(-2);
#if defined(__AVXVNNI__) || defined(__AVX512VNNI__)
  const __m256i a = _mm256_set1_epi8(3);
#endif
#if !defined(__AVXVNNI__) && !defined(__AVX512VNNI__)
  const __m256i ones = _mm256_set1_epi16(1);
#endif
  for (long it = 0; it < peak_iterations / 2; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
      acc[i] = _mm256_dpbusd_epi32(acc[i], a, b);
#elif defined(__AVXVNNI__)
      acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, b);
#else
      // Each chain multiplies its own accumulator: constant operands would
      // let the compiler compute the products once for all chains (or hoist
      // them out of the loop) and time only the adds.
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[i], b), ones));
#endif
    }
  }
  int s = 0;
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) s += _mm256_extract_epi32(acc[i], 0);
  sink_i = s;
}
#else
constexpr double int8_pairs_per_instruction = 8;  // 16-bit pairs per pmaddwd (128-bit)
inline void int8_loop(unsigned) {
  __m128i acc[12];
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) acc[i] = _mm_set1_epi32(i);
  const __m128i b = _mm_set1_epi16(-2);
  for (long it = 0; it < peak_iterations / 2; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm_add_epi32(acc[i], _mm_madd_epi16(acc[i], b));  // as above
  }
  int s = 0;
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) s += _mm_cvtsi128_si32(acc[i]);
  sink_i = s;
}
#endif
inline const char* int8_instruction() {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return "vpdpbusd (AVX512-VNNI, 256-bit)";
#elif defined(__AVXVNNI__)
  return "vpdpbusd (AVX-VNNI)";
#elif defined(__AVX2__)
  return "vpmaddubsw+vpmaddwd+vpaddd (AVX2, no VNNI)";
#else
  return "pmaddwd+paddd (SSE2, 16-bit pairs)";
#endif
}

#if defined(__AVX512BF16__)
inline void bf16_loop(unsigned) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380);
  for (long it = 0; it < peak_iterations / 2; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  // Summed through memory: GCC 12's _mm512_reduce_add_ps trips its own
  // -Wuninitialized (GCC bug 105593).
  alignas(64) float lanes[16];
  float s = 0;
  for (int i = 0; i < 12; ++i) {
    _mm512_store_ps(lanes, acc[i]);
    for (float v : lanes) s += v;
  }
  sink_f = s;
}
#endif

inline void BM_peak_fp32_fma(benchmark::State& state) {
  const double flops = 2.0 * fma_lanes * 12 * double(peak_iterations);
  limits().fp32_flops = std::max(limits().fp32_flops, best_rate(state, flops, "GFLOP/s", fma_loop));
}

inline void BM_peak_int8_dot(benchmark::State& state) {
  const double ops = 2.0 * int8_pairs_per_instruction * 12 * double(peak_iterations / 2);
  const double rate = best_rate(state, ops, "GOP/s", int8_loop);
  if (rate > limits().int8_ops) {
    limits().int8_ops = rate;
    limits().int8_instruction = int8_instruction();
  }
  state.SetLabel(int8_instruction());
}

/// The same at 512 bits (the AVX-512 int8 kernel's vpdpbusd): on cores that
/// split 512-bit work into two halves it is no faster than 256-bit, on
/// others up to twice; the int8 peak is the better of the two.
inline void BM_peak_int8_dot_512(benchmark::State& state) {
#if defined(__AVX512VNNI__)
  const double ops = 2.0 * 64 * 12 * double(peak_iterations / 2);
  const double rate = best_rate(state, ops, "GOP/s", [](unsigned) {
    __m512i acc[12];
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (long it = 0; it < peak_iterations / 2; ++it) {
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    }
    alignas(64) std::int32_t lanes[16];
    int s = 0;
    for (int i = 0; i < 12; ++i) {
      _mm512_store_si512(lanes, acc[i]);
      s += lanes[0];
    }
    sink_i = s;
  });
  if (rate > limits().int8_ops) {
    limits().int8_ops = rate;
    limits().int8_instruction = "vpdpbusd (AVX512-VNNI, 512-bit)";
  }
  state.SetLabel("vpdpbusd (AVX512-VNNI, 512-bit)");
#else
  for (auto _ : state) {
  }
  state.SetLabel("no AVX512-VNNI");
#endif
}

inline void BM_peak_bf16_dot(benchmark::State& state) {
#if defined(__AVX512BF16__)
  const double flops = 2.0 * 32 * 12 * double(peak_iterations / 2);
  limits().bf16_flops = std::max(limits().bf16_flops, best_rate(state, flops, "GFLOP/s", bf16_loop));
  state.SetLabel("vdpbf16ps (AVX512-BF16)");
#else
  for (auto _ : state) {
  }
  state.SetLabel("no bf16 dot instruction: bf16 kernels widen to fp32, the FP32 FMA peak is their limit");
#endif
}

/// The read loop's vectors: 512-bit where AVX-512 is, 256-bit with AVX2,
/// 128-bit SSE2 otherwise.
#if defined(__AVX512F__)
using rvec = __m512;
constexpr std::size_t rlanes = 16;
inline rvec rzero() { return _mm512_setzero_ps(); }
inline rvec rload(const float* p) { return _mm512_load_ps(p); }
inline rvec radd(rvec a, rvec b) { return _mm512_add_ps(a, b); }
inline float rfirst(rvec v) { return _mm512_cvtss_f32(v); }
#elif defined(__AVX2__)
using rvec = __m256;
constexpr std::size_t rlanes = 8;
inline rvec rzero() { return _mm256_setzero_ps(); }
inline rvec rload(const float* p) { return _mm256_load_ps(p); }
inline rvec radd(rvec a, rvec b) { return _mm256_add_ps(a, b); }
inline float rfirst(rvec v) { return _mm256_cvtss_f32(v); }
#else
using rvec = __m128;
constexpr std::size_t rlanes = 4;
inline rvec rzero() { return _mm_setzero_ps(); }
inline rvec rload(const float* p) { return _mm_load_ps(p); }
inline rvec radd(rvec a, rvec b) { return _mm_add_ps(a, b); }
inline float rfirst(rvec v) { return _mm_cvtss_f32(v); }
#endif

/// The buffer the read limit streams: 1 GiB (far past any cache), 2 MiB
/// aligned and on transparent huge pages where Linux offers them, as the
/// packed weights are (PanelMatrix's storage): with 4 KiB pages the TLB
/// misses and the prefetchers stopping at every page cost a quarter of the
/// bandwidth on some machines (one AMD EPYC read 50 GB/s on 4 KiB pages,
/// 70 GB/s on 2 MiB pages), and the limit would understate what the
/// kernels reach.
constexpr std::size_t read_floats = std::size_t(1) << 28;  // 1 GiB

inline const float* read_buffer() {
  static const float* data = [] {
    constexpr std::size_t n = read_floats;
    constexpr std::size_t huge = std::size_t(2) << 20;
    const std::size_t bytes = (n * sizeof(float) + huge - 1) / huge * huge;
    auto* p = static_cast<float*>(std::aligned_alloc(huge, bytes));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
    std::fill(p, p + n, 1.0f);
    return p;
  }();
  return data;
}

/// Thread t's share of one pass over the read buffer: summed with eight
/// independent vector accumulators (so loads, not adds, set the pace),
/// asking for the lines 4 KiB ahead of its loads, so each page's lines are
/// on their way before the loads reach it.
inline float read_share(unsigned t) {
  constexpr std::size_t n = read_floats, step = 8 * rlanes, ahead = 1024;  // floats per iteration, floats ahead
  const float* p = read_buffer();
  const std::size_t threads = hardware_threads();
  const std::size_t share = n / threads / step * step, begin = share * t;
  const std::size_t end = t + 1 == threads ? n : begin + share;
  std::size_t i = begin;
  rvec a[8];
  for (rvec& v : a) v = rzero();
  for (; i + step <= end; i += step) {
    for (std::size_t line = 0; line < step * sizeof(float); line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p + i + ahead) + line, _MM_HINT_T0);
    for (int c = 0; c < 8; ++c) a[c] = radd(a[c], rload(p + i + std::size_t(c) * rlanes));
  }
  float s = rfirst(radd(radd(radd(a[0], a[1]), radd(a[2], a[3])), radd(radd(a[4], a[5]), radd(a[6], a[7]))));
  for (; i < end; ++i) s += p[i];
  return s;
}

/// DRAM read bandwidth: every thread reads its share of the 1 GiB buffer at once.
inline void BM_memory_read(benchmark::State& state) {
  std::vector<float> sums(hardware_threads());
  const double bytes = double(read_floats * sizeof(float)) / hardware_threads();
  const double rate = best_rate(state, bytes, "GB/s", [&](unsigned t) { sums[t] = read_share(t); });
  limits().read_bytes = std::max(limits().read_bytes, rate);
  benchmark::DoNotOptimize(sums.data());
}

/// The read bandwidth now (bytes/s, the better of two passes), for a
/// bandwidth-bound row to compare itself with a pass taken beside it: the
/// shared machines move between bandwidth phases over minutes (one 2-core
/// EPYC read about 50 GB/s in some, 80 in others), so the limit measured at
/// the start of a run can belong to another phase than a row timed later.
inline double read_rate_now() {
  std::vector<float> sums(hardware_threads());
  double best = 1e30;
  for (int pass = 0; pass < 2; ++pass)
    best = std::min(best, time_on_all_threads([&](unsigned t) { sums[t] = read_share(t); }));
  benchmark::DoNotOptimize(sums.data());
  return double(read_floats * sizeof(float)) / best;
}

inline void register_machine_limits() {
  const auto reg = [](const char* name, void (*fn)(benchmark::State&)) {
    benchmark::RegisterBenchmark(name, fn)->Iterations(10)->UseRealTime()->Unit(benchmark::kMillisecond);
  };
  reg("limit/fp32_fma", BM_peak_fp32_fma);
  reg("limit/bf16_dot", BM_peak_bf16_dot);
  reg("limit/int8_dot", BM_peak_int8_dot);
  reg("limit/int8_dot_512", BM_peak_int8_dot_512);
  reg("limit/memory_read", BM_memory_read);
}

}  // namespace moe_bench
