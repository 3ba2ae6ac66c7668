#pragma once
/// \file kernels.cuh
/// The CUDA backend's own kernels: the router logits in the host's
/// summation order, gather, the FFN activation between the two GEMMs, and
/// the combine in slot order. The GEMMs themselves are cuBLAS's
/// (cuda/experts.cuh). Every kernel is deterministic: each output element
/// is written by one thread, which sums in a fixed order; no atomics.
/// Device code: include from .cu translation units (nvcc).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "moe/backend/cuda/check.hpp"
#include "moe/core/types.hpp"
#include "moe/expert/activation.hpp"

namespace moe::cuda {

/// Threads per block of the element-wise kernels.
inline constexpr int block_threads = 256;

/// Blocks for n elements at one per thread (grid-stride loops cover the
/// rest), at least one so an empty launch stays valid to the runtime.
inline unsigned blocks_for(std::int64_t n) {
  const std::int64_t b = (n + block_threads - 1) / block_threads;
  return unsigned(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

// ---- router logits ----------------------------------------------------------

/// logits[t, e] = x[t] · w[e] for T·E pairs, eight threads per pair: lane j
/// sums the products i ≡ j (mod 8) in increasing i, then the eight partial
/// sums are combined ((p0+p4) + (p1+p5)) + ((p2+p6) + (p3+p7)), which is
/// exactly moe::detail::dot's order. Products and sums are rounded one by
/// one (__fmul_rn, __fadd_rn: no fused multiply-add), as the host computes
/// them, so the logits, and with them the routing decisions, are the
/// host's bit for bit.
__global__ void router_logits_kernel(const float* __restrict__ x, index_t ldx, const float* __restrict__ w, index_t T,
                                     index_t E, index_t d, float* __restrict__ logits) {
  const index_t pair = index_t(blockIdx.x) * (blockDim.x / 8) + index_t(threadIdx.x / 8);
  const int lane = int(threadIdx.x % 8);
  const bool live = pair < T * E;
  float acc = 0.0f;
  if (live) {
    const float* a = x + (pair / E) * ldx;
    const float* b = w + (pair % E) * d;
    for (index_t i = lane; i < d; i += 8) acc = __fadd_rn(acc, __fmul_rn(a[i], b[i]));
  }
  // Every lane takes part in the shuffles (width 8: within the pair's group).
  constexpr unsigned all = 0xffffffffu;
  const float s = __fadd_rn(acc, __shfl_down_sync(all, acc, 4, 8));  // lanes 0-3: p_j + p_{j+4}
  const float p = __fadd_rn(s, __shfl_down_sync(all, s, 1, 8));      // lanes 0, 2: s0 + s1, s2 + s3
  const float q = __fadd_rn(p, __shfl_down_sync(all, p, 2, 8));      // lane 0: (s0 + s1) + (s2 + s3)
  if (live && lane == 0) logits[pair] = q;
}

/// logits [T, E] = x [T, d] (rows ldx apart) · wᵀ, w [E, d] fp32, on `stream`.
inline void router_logits(const float* x, index_t ldx, const float* w, index_t T, index_t E, index_t d, float* logits,
                          cudaStream_t stream) {
  if (T * E == 0) return;
  constexpr index_t pairs_per_block = block_threads / 8;
  const index_t blocks = (T * E + pairs_per_block - 1) / pairs_per_block;
  router_logits_kernel<<<unsigned(blocks), block_threads, 0, stream>>>(x, ldx, w, T, E, d, logits);
  check_launch("router_logits_kernel");
}

// ---- gather and combine -----------------------------------------------------

/// rows[r] = x[row_token[r]] for n rows of d floats.
__global__ void gather_kernel(const float* __restrict__ x, index_t ldx, const std::int32_t* __restrict__ row_token,
                              index_t n, index_t d, float* __restrict__ rows, index_t ldr) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * d; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / d, c = i % d;
    rows[r * ldr + c] = x[index_t(row_token[r]) * ldx + c];
  }
}

/// y[t, c] = Σ_j slot_weight[t, j] · rows_out[slot_row[t, j], c], slots in
/// order, skipping slots without a row; each product rounded, then added:
/// the host's combine (HostStages::combine_token), bit for bit.
__global__ void combine_kernel(const float* __restrict__ rows_out, index_t ldr,
                               const std::int32_t* __restrict__ slot_row, const float* __restrict__ slot_weight,
                               index_t T, int k, index_t d, float* __restrict__ y, index_t ldy) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < T * d; i += index_t(gridDim.x) * blockDim.x) {
    const index_t t = i / d, c = i % d;
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) {
      const std::int32_t row = slot_row[t * k + j];
      if (row >= 0) acc = __fadd_rn(acc, __fmul_rn(slot_weight[t * k + j], rows_out[index_t(row) * ldr + c]));
    }
    y[t * ldy + c] = acc;
  }
}

// ---- activation between the two GEMMs ------------------------------------------

/// An activation policy's device form. The library's activations have one;
/// a user's own activation needs a specialisation of this to run on the
/// device (the same formula as its operator()).
template <class A>
struct DeviceActivation;

template <>
struct DeviceActivation<SiLU> {
  __device__ static float apply(float z) { return z / (1.0f + expf(-z)); }
};
template <>
struct DeviceActivation<GeLU> {
  __device__ static float apply(float z) { return 0.5f * z * (1.0f + erff(z * 0.70710678118654752f)); }
};
template <>
struct DeviceActivation<GeLUTanh> {
  __device__ static float apply(float z) {
    const float inner = 0.7978845608028654f * (z + 0.044715f * z * z * z);
    return 0.5f * z * (1.0f + tanhf(inner));
  }
};
template <>
struct DeviceActivation<ReLU> {
  __device__ static float apply(float z) { return fmaxf(z, 0.0f); }
};

template <class A>
concept HasDeviceActivation = requires(float z) {
  {DeviceActivation<A>::apply(z)};
};

/// Stores an fp32 value as H (fp32, or bf16 rounded to nearest even).
__device__ inline void store_as(float* p, float v) { *p = v; }
__device__ inline void store_as(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

/// h[r, i] = act(g[r, i]) · u[r, i] (gated) or act(u[r, i]) for n rows of
/// f hidden units; gu holds each row's gate then up outputs (gated: 2f
/// columns) or its up outputs (f columns).
template <class A, bool Gated, class H>
__global__ void activation_kernel(const float* __restrict__ gu, index_t n, index_t f, H* __restrict__ h) {
  const index_t width = Gated ? 2 * f : f;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * f; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / f, c = i % f;
    const float* row = gu + r * width;
    const float a = DeviceActivation<A>::apply(row[c]);
    store_as(h + i, Gated ? a * row[f + c] : a);
  }
}

/// rows [n, d] (rows ld apart) as contiguous bf16, rounded to nearest even.
__global__ void to_bf16_kernel(const float* __restrict__ rows, index_t ld, index_t n, index_t d,
                               __nv_bfloat16* __restrict__ out) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * d; i += index_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(rows[(i / d) * ld + i % d]);
}

}  // namespace moe::cuda
