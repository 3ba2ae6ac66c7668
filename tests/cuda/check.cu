// The CUDA error path, and the device smoke test. The first part needs no
// GPU (error names come from the runtime library), so it runs in every CUDA
// build; the second skips with exit code 77 (ctest: skipped) and a message
// where no device is present.
#include <moe/backend/cuda/check.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace {
int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what);
    ++failures;
  }
}

/// Runs f, which must throw moe::Error(device) whose message contains every fragment.
template <class F>
void expect_device_error(F&& f, std::vector<std::string> fragments, const char* what) {
  try {
    f();
    expect(false, what);
  } catch (const moe::Error& e) {
    bool ok = e.code() == moe::ErrorCode::device;
    for (const auto& frag : fragments) ok = ok && std::string(e.what()).find(frag) != std::string::npos;
    if (!ok) std::printf("message: %s\n", e.what());
    expect(ok, what);
  }
}

__global__ void add_one(float* v, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] += 1.0f;
}
}  // namespace

int main() {
  expect_device_error([] { MOE_CUDA_CHECK(cudaErrorMemoryAllocation); }, {"cudaErrorMemoryAllocation", "out of memory"},
                      "a runtime status names the call and the error");
  expect_device_error([] { MOE_CUDA_CHECK(CUBLAS_STATUS_NOT_INITIALIZED); },
                      {"CUBLAS_STATUS_NOT_INITIALIZED", "CUBLAS_STATUS_NOT_INITIALIZED"},
                      "a cuBLAS status names the call and the error");
  MOE_CUDA_CHECK(cudaSuccess);  // success throws nothing

  if (moe::cuda::device_count() == 0) {
    std::printf("error path: %s; no CUDA device here: the device part skipped\n", failures ? "FAILED" : "PASSED");
    return failures ? 1 : 77;
  }
  constexpr int n = 1000;
  std::vector<float> host(n);
  for (int i = 0; i < n; ++i) host[std::size_t(i)] = float(i) * 0.5f;
  float* device = nullptr;
  MOE_CUDA_CHECK(cudaMalloc(&device, n * sizeof(float)));
  MOE_CUDA_CHECK(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  add_one<<<(n + 255) / 256, 256>>>(device, n);
  moe::cuda::check_launch("add_one");
  std::vector<float> back(n);
  MOE_CUDA_CHECK(cudaMemcpy(back.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
  MOE_CUDA_CHECK(cudaFree(device));
  for (int i = 0; i < n; ++i) expect(back[std::size_t(i)] == float(i) * 0.5f + 1.0f, "add_one wrote every element");
  expect_device_error(
      [] {
        add_one<<<1, 4096>>>(nullptr, 0);
        moe::cuda::check_launch("add_one<<<1, 4096>>>");
      },
      {"add_one<<<1, 4096>>>", "cudaErrorInvalidConfiguration"}, "a bad launch is named");
  std::printf("cuda check: %s\n", failures ? "FAILED" : "PASSED");
  return failures ? 1 : 0;
}
