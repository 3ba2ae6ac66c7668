#pragma once
/// \file cuda.cuh
/// backend::Cuda: the execution contract on an NVIDIA GPU. x and y are
/// device views ([T, d_model] fp32, memory::Device); the experts are
/// uploaded once by prepare(); a call's device buffers, its stream and its
/// cuBLAS handle live in the workspace (ws.backend), so a steady-state call
/// allocates nothing.
///
///   route    router logits on the device in the host's summation order (the
///            same bits, hence the same routing decisions as every host
///            backend); scores, noise, top-k and combine weights on the host
///            from those logits (T×E floats back), by the router policy itself
///   plan     the counting sort on the host (capacity/plan.hpp), its
///            row and slot arrays copied to the device
///   gather   a kernel: rows[r] = x[token of r]
///   experts  per expert with rows: cuBLAS GEMM gate|up, one activation
///            kernel over all rows, cuBLAS GEMM down
///   combine  a kernel: y[t] = Σ_j w[t, j] · rows_out[row(t, j)] in slot order
///
/// Numerics (numerics.hpp), fp32 accumulation in both:
///   Cuda<numerics::AsStored>     weights widened to fp32 on the device (a
///                                bf16 checkpoint takes twice its bytes),
///                                fp32 GEMMs without TF32: the golden 1e-5
///   Cuda<numerics::Bf16Compute>  weights as bf16 (fp16/fp32 rounded when
///                                uploaded), rows and hidden units rounded to
///                                bf16, tensor-core GEMMs: the CPU
///                                Bf16Compute's bound, 1e-2
/// Results are the same bits run to run (cuBLAS is deterministic for a given
/// GPU and call; the kernels write each element from one thread in a fixed
/// order). Inference only: no backward (MoELayer refuses expert dropout).
///
/// Device code: include from a .cu translation unit built by nvcc, linked
/// to moe::cuda (CMake MOE_ENABLE_CUDA).

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "moe/backend/backend.hpp"
#include "moe/backend/cuda/check.hpp"
#include "moe/backend/cuda/kernels.cuh"
#include "moe/backend/cuda/memory.hpp"
#include "moe/backend/numerics.hpp"

namespace moe::cuda {

/// A cuBLAS handle, created on first use and destroyed with its owner.
class BlasHandle {
 public:
  BlasHandle() = default;
  BlasHandle(BlasHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  BlasHandle& operator=(BlasHandle&& o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  ~BlasHandle() {
    if (h_) (void)cublasDestroy(h_);
  }

  /// The handle, bound to `stream`.
  cublasHandle_t on(cudaStream_t stream) {
    if (!h_) MOE_CUDA_CHECK(cublasCreate(&h_));
    MOE_CUDA_CHECK(cublasSetStream(h_, stream));
    return h_;
  }

 private:
  cublasHandle_t h_ = nullptr;
};

/// A router weight matrix as fp32 in device memory, uploaded when the host
/// matrix it copies changes identity (pointer, dtype or shape). A router
/// weight changed in place under the same pointer is not seen: build a new
/// workspace after editing router weights (the experts are guarded by the
/// layer's weight version instead).
struct DeviceRouterWeight {
  Buffer<float> values;
  WeightMatrix source;  ///< what `values` holds a copy of

  const float* get(const WeightMatrix& w, cudaStream_t stream) {
    if (w.data != source.data || w.dtype != source.dtype || w.rows != source.rows || w.cols != source.cols) {
      std::vector<float> widened(std::size_t(w.rows * w.cols));
      widen_to_float(w.data, w.dtype, 0, w.rows * w.cols, widened.data());
      upload(std::span<const float>(widened), values, stream);
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream));  // `widened` is freed on return
      source = w;
    }
    return values.data();
  }
};

}  // namespace moe::cuda

namespace moe::backend {

template <numerics::Numerics N = numerics::AsStored>
class Cuda {
  static_assert(std::is_same_v<N, numerics::AsStored> || std::is_same_v<N, numerics::Bf16Compute>,
                "backend::Cuda: numerics must be numerics::AsStored or numerics::Bf16Compute");
  static constexpr bool bf16 = std::is_same_v<N, numerics::Bf16Compute>;

 public:
  using memory_space = memory::Device;
  using matrix_type = cuda::DeviceMatrix;  ///< the layer's y comes back in device memory
  using numerics_type = N;
  /// How the experts' weights are held on the device.
  using element_type = std::conditional_t<bf16, __nv_bfloat16, float>;

  static constexpr std::string_view name() { return bf16 ? "cuda-bf16" : "cuda"; }

  /// The experts on the device: per expert, gate and up stacked as one
  /// [2·d_ff, d_model] matrix (one GEMM gives both; up alone for an
  /// ungated FFN), and down [d_model, d_ff].
  struct Prepared {
    PreparedFrom from;
    index_t experts = 0, d_model = 0, d_ff = 0;
    bool gated = false;
    cuda::Buffer<element_type> gate_up;  ///< [E, (2 if gated) · d_ff, d_model]
    cuda::Buffer<element_type> down;     ///< [E, d_model, d_ff]

    index_t gate_up_rows() const noexcept { return gated ? 2 * d_ff : d_ff; }
    std::size_t bytes() const noexcept { return gate_up.bytes() + down.bytes(); }
  };

  /// A call's device state: expert rows, the router's logits, the plan's
  /// arrays, the hidden units, the stream and the cuBLAS handle.
  struct Workspace {
    /// The stream every stage of a call runs on; the legacy default stream
    /// unless the caller sets its own (the caller owns it).
    cudaStream_t stream = nullptr;

    cuda::Buffer<float> input, output;  ///< expert rows [rows, d_model]
    cuda::Buffer<float> logits;         ///< [T, E] router logits (and the noise logits after them)
    cuda::DeviceRouterWeight gate, noise;
    cuda::Buffer<std::int32_t> row_token, slot_row;  ///< the plan's, on the device
    cuda::Buffer<float> slot_weight;
    cuda::Buffer<float> gate_up;            ///< [rows, 2·d_ff] first GEMM's output
    cuda::Buffer<element_type> hidden;      ///< [rows, d_ff] activations, the second GEMM's input
    cuda::Buffer<__nv_bfloat16> rows_bf16;  ///< [rows, d_model] input rows rounded (Bf16Compute)
    cuda::BlasHandle blas;
    Matrix host_x;                   ///< x on the host, for a router policy that runs there whole
    std::vector<float> host_logits;  ///< staging for the logits copied back

    MatrixView<float, memory::Device> input_rows(index_t rows, index_t d) {
      return {input.grow(std::size_t(rows * d)), rows, d};
    }
    MatrixView<float, memory::Device> output_rows(index_t rows, index_t d) {
      return {output.grow(std::size_t(rows * d)), rows, d};
    }
  };

  /// Uploads every expert (widened to fp32, or as bf16) into one
  /// allocation per matrix kind. Always a copy: the layer refuses it once
  /// the host weights' version moves on.
  Prepared prepare(std::span<const ExpertWeights> w, PrepareOptions = {}) const {
    Prepared p;
    p.from.holds_copy = true;
    if (w.empty()) return p;
    p.experts = index_t(w.size());
    p.d_model = w[0].up.cols;
    p.d_ff = w[0].up.rows;
    p.gated = !w[0].gate.empty();
    const index_t gu = p.gate_up_rows(), d = p.d_model, f = p.d_ff;
    p.gate_up.grow(std::size_t(p.experts * gu * d));
    p.down.grow(std::size_t(p.experts * d * f));
    std::vector<element_type> staging;
    for (index_t e = 0; e < p.experts; ++e) {
      const ExpertWeights& x = w[std::size_t(e)];
      element_type* gu_dst = p.gate_up.data() + e * gu * d;
      if (p.gated) {
        copy_weight(x.gate, gu_dst, staging);
        copy_weight(x.up, gu_dst + f * d, staging);
      } else {
        copy_weight(x.up, gu_dst, staging);
      }
      copy_weight(x.down, p.down.data() + e * d * f, staging);
    }
    return p;
  }

  /// Router logits on the device, the rest of the router policy on the host
  /// from them. A router without route_from_logits, or whose input is
  /// jittered in this call (Jitter in training), runs on the host whole
  /// from a copy of x.
  template <RoutingPolicy R>
  void route(const R& router, MatrixView<const float, memory::Device> x, const RouterWeights& w,
             const RouteContext& ctx, Routing& out, RouterScratch& scratch, Workspace& ws) const {
    const index_t T = x.rows, E = w.gate.rows, d = x.cols;
    constexpr bool from_logits =
        requires(const R& r, index_t n, const RouterWeights& rw, const RouteContext& c, Routing& o, RouterScratch& s) {
      r.route_from_logits(n, rw, c, o, s);
      { R::input_perturbed(c) } -> std::convertible_to<bool>;
      { R::noise_logits_needed(c) } -> std::convertible_to<bool>;
    };
    if constexpr (from_logits) {
      if (!R::input_perturbed(ctx)) {
        const bool noisy = R::noise_logits_needed(ctx);
        float* logits = ws.logits.grow(std::size_t((noisy ? 2 : 1) * T * E));
        cuda::router_logits(x.data, x.row_stride, ws.gate.get(w.gate, ws.stream), T, E, d, logits, ws.stream);
        if (noisy)
          cuda::router_logits(x.data, x.row_stride, ws.noise.get(w.noise, ws.stream), T, E, d, logits + T * E,
                              ws.stream);
        cuda::download(logits, std::size_t((noisy ? 2 : 1) * T * E), ws.host_logits, ws.stream);
        out.clean_logits.assign(ws.host_logits.begin(), ws.host_logits.begin() + T * E);
        if (noisy) scratch.noise_logits.assign(ws.host_logits.begin() + T * E, ws.host_logits.end());
        router.route_from_logits(T, w, ctx, out, scratch);
        return;
      }
    }
    router.route(host_copy(x, ws), w, ctx, out, scratch);
  }

  /// The counting sort on the host; the arrays gather and combine read go
  /// to the device.
  void plan(const Routing& r, std::optional<index_t> capacity, Priority priority, RoutingPlan& out,
            PlanScratch& scratch, Workspace& ws) const {
    build_plan(r, capacity, priority, out, scratch);
    cuda::upload(std::span<const std::int32_t>(out.row_token), ws.row_token, ws.stream);
    cuda::upload(std::span<const std::int32_t>(out.slot_row), ws.slot_row, ws.stream);
    cuda::upload(std::span<const float>(out.slot_weight), ws.slot_weight, ws.stream);
  }

  void gather(const RoutingPlan& plan, MatrixView<const float, memory::Device> x,
              MatrixView<float, memory::Device> rows, Workspace& ws) const {
    const index_t n = plan.rows(), d = x.cols;
    if (n == 0) return;
    cuda::gather_kernel<<<cuda::blocks_for(n * d), cuda::block_threads, 0, ws.stream>>>(
        x.data, x.row_stride, ws.row_token.data(), n, d, rows.data, rows.row_stride);
    cuda::check_launch("gather_kernel");
  }

  /// Expert X on each expert's rows: gate|up GEMM per expert, the
  /// activation over all rows at once, down GEMM per expert.
  template <ExpertPolicy X>
  void experts(const RoutingPlan& plan, const Prepared& p, MatrixView<const float, memory::Device> rows,
               MatrixView<float, memory::Device> out, Workspace& ws, const ExpertDropout& drop = {}) const {
    using F = typename X::ffn;
    using A = typename F::activation;
    static_assert(cuda::HasDeviceActivation<A>,
                  "backend::Cuda: this activation has no device form; specialise moe::cuda::DeviceActivation");
    moe::detail::require(!drop.active(), ErrorCode::unsupported, "backend::", name(),
                         ": expert dropout (training) is not implemented on the device");
    moe::detail::require(p.gated == F::gated, ErrorCode::invalid_argument, "backend::", name(),
                         ": the prepared experts ", p.gated ? "have" : "lack", " a gate matrix but the FFN is ",
                         F::gated ? "" : "not ", "gated");
    const index_t n = plan.rows(), d = p.d_model, f = p.d_ff, gu = p.gate_up_rows();
    if (n == 0) return;
    cublasHandle_t h = ws.blas.on(ws.stream);

    // The first GEMM's input: the rows themselves, or their bf16 rounding.
    const void* in = rows.data;
    index_t ld_in = rows.row_stride;
    if constexpr (bf16) {
      __nv_bfloat16* r16 = ws.rows_bf16.grow(std::size_t(n * d));
      cuda::to_bf16_kernel<<<cuda::blocks_for(n * d), cuda::block_threads, 0, ws.stream>>>(rows.data, rows.row_stride,
                                                                                           n, d, r16);
      cuda::check_launch("to_bf16_kernel");
      in = r16;
      ld_in = d;
    }
    float* gate_up = ws.gate_up.grow(std::size_t(n * gu));
    element_type* hidden = ws.hidden.grow(std::size_t(n * f));
    for (index_t e = 0; e < plan.experts; ++e) {
      const index_t first = plan.first_row(e), count = plan.kept(e);
      if (count == 0) continue;
      // Row-major [count, gu] = rows · W_guᵀ, i.e. column-major W_gu · rowsᵀ.
      gemm(h, gu, count, d, p.gate_up.data() + e * gu * d, d, offset(in, first * ld_in), ld_in, gate_up + first * gu,
           gu, "cublasGemmEx (gate|up)");
    }
    cuda::activation_kernel<A, F::gated, element_type>
        <<<cuda::blocks_for(n * f), cuda::block_threads, 0, ws.stream>>>(gate_up, n, f, hidden);
    cuda::check_launch("activation_kernel");
    for (index_t e = 0; e < plan.experts; ++e) {
      const index_t first = plan.first_row(e), count = plan.kept(e);
      if (count == 0) continue;
      gemm(h, d, count, f, p.down.data() + e * d * f, f, hidden + first * f, f, out.data + first * out.row_stride,
           out.row_stride, "cublasGemmEx (down)");
    }
  }

  void combine(const RoutingPlan& plan, MatrixView<const float, memory::Device> rows_out,
               MatrixView<float, memory::Device> y, Workspace& ws) const {
    const index_t T = plan.tokens, d = y.cols;
    if (T == 0) return;
    cuda::combine_kernel<<<cuda::blocks_for(T * d), cuda::block_threads, 0, ws.stream>>>(
        rows_out.data, rows_out.row_stride, ws.slot_row.data(), ws.slot_weight.data(), T, plan.k, d, y.data,
        y.row_stride);
    cuda::check_launch("combine_kernel");
  }

 private:
  static constexpr cudaDataType_t weight_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;

  static const void* offset(const void* p, index_t elements) {
    return static_cast<const unsigned char*>(p) + elements * index_t(bf16 ? 2 : 4);
  }

  /// Column-major C [m, n] (ldc) = Aᵀ · B with A [k, m] (lda) of weights and
  /// B [k, n] (ldb) of activations, fp32 accumulation into fp32 C: in the
  /// row-major terms of the caller, C_rows [n, m] = B_rows [n, k] · W [m, k]ᵀ.
  static void gemm(cublasHandle_t h, index_t m, index_t n, index_t k, const element_type* A, index_t lda, const void* B,
                   index_t ldb, float* C, index_t ldc, const char* what) {
    const float one = 1.0f, zero = 0.0f;
    // AsStored: CUBLAS_COMPUTE_32F_PEDANTIC keeps cuBLAS from TF32 or any
    // other reduced-precision path; Bf16Compute: tensor cores, fp32 accumulation.
    constexpr cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    moe::cuda::check(
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &one, A, weight_type, int(lda), B,
                     weight_type, int(ldb), &zero, C, CUDA_R_32F, int(ldc), compute, CUBLAS_GEMM_DEFAULT),
        what);
  }

  /// A weight matrix, converted to element_type on the host, into device memory at dst.
  static void copy_weight(const WeightMatrix& w, element_type* dst, std::vector<element_type>& staging) {
    const index_t n = w.rows * w.cols;
    staging.resize(std::size_t(n));
    if constexpr (bf16) {
      for (index_t i = 0; i < n; ++i) {
        const std::uint16_t bits = w.dtype == DType::BF16 ? static_cast<const std::uint16_t*>(w.data)[i]
                                                          : bf16_bits(load_as_float(w.data, w.dtype, i));
        staging[std::size_t(i)] = __nv_bfloat16(__nv_bfloat16_raw{bits});
      }
    } else {
      widen_to_float(w.data, w.dtype, 0, n, staging.data());
    }
    MOE_CUDA_CHECK(cudaMemcpy(dst, staging.data(), std::size_t(n) * sizeof(element_type), cudaMemcpyHostToDevice));
  }

  /// x copied to the host (for a router that runs there whole).
  static MatrixView<const float> host_copy(MatrixView<const float, memory::Device> x, Workspace& ws) {
    ws.host_x.resize(x.rows, x.cols);
    if (x.rows * x.cols > 0) {
      MOE_CUDA_CHECK(cudaMemcpy2DAsync(ws.host_x.data(), std::size_t(x.cols) * sizeof(float), x.data,
                                       std::size_t(x.row_stride) * sizeof(float), std::size_t(x.cols) * sizeof(float),
                                       std::size_t(x.rows), cudaMemcpyDeviceToHost, ws.stream));
      MOE_CUDA_CHECK(cudaStreamSynchronize(ws.stream));
    }
    return ws.host_x;
  }
};

static_assert(BackendPolicy<Cuda<>>);
static_assert(BackendPolicy<Cuda<numerics::Bf16Compute>>);

}  // namespace moe::backend
