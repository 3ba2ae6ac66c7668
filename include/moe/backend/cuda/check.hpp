#pragma once
/// \file check.hpp
/// CUDA runtime and cuBLAS status codes as moe::Error(ErrorCode::device),
/// naming the call that failed, so a failure on the device reads like any
/// other bad input: `cudaMalloc(&p, bytes): cudaErrorMemoryAllocation (out of
/// memory)`. Every runtime and cuBLAS call of backend::Cuda goes through
/// MOE_CUDA_CHECK; every kernel launch is followed by check_launch.
///
/// Needs the CUDA Toolkit (CMake: MOE_ENABLE_CUDA, target moe::cuda).

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string_view>

#include "moe/core/error.hpp"

namespace moe::cuda {

/// Throws moe::Error(device) unless `status` is cudaSuccess; `call` is the
/// call's text (MOE_CUDA_CHECK passes it).
inline void check(cudaError_t status, std::string_view call) {
  moe::detail::require(status == cudaSuccess, ErrorCode::device, call, ": ", cudaGetErrorName(status), " (",
                       cudaGetErrorString(status), ")");
}

/// The same for a cuBLAS status.
inline void check(cublasStatus_t status, std::string_view call) {
  moe::detail::require(status == CUBLAS_STATUS_SUCCESS, ErrorCode::device, call, ": ", cublasGetStatusName(status),
                       " (", cublasGetStatusString(status), ")");
}

/// After a kernel launch: the launch's own error (bad configuration, no
/// kernel image for this GPU), named by the kernel.
inline void check_launch(std::string_view kernel) { check(cudaGetLastError(), kernel); }

/// CUDA devices this process can use; 0 where there is none or no driver
/// (the CUDA tests skip then, saying so).
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" / "insufficient driver" status
    return 0;
  }
  return n;
}

}  // namespace moe::cuda

/// Runs a CUDA runtime or cuBLAS call and throws moe::Error(device) naming it
/// when it fails: MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, kind, stream)).
#define MOE_CUDA_CHECK(call) ::moe::cuda::check((call), #call)
