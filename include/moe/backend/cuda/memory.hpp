#pragma once
/// \file memory.hpp
/// Device memory for the CUDA backend: an owning buffer that grows and never
/// shrinks (a workspace reaches its largest call once, then allocates
/// nothing), an owning fp32 matrix whose views are memory::Device views, and
/// the copies between host and device. Host code only: usable from any C++
/// translation unit that links moe::cuda.

#include <cuda_runtime.h>

#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "moe/backend/cuda/check.hpp"
#include "moe/core/view.hpp"

namespace moe::cuda {

/// `n` elements of T in device memory, owned. grow() keeps the allocation
/// when it is large enough, so a reused buffer allocates once.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { grow(n); }
  Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), capacity_(std::exchange(o.capacity_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  /// At least n elements (contents are lost when it has to reallocate).
  T* grow(std::size_t n) {
    if (n > capacity_) {
      release();
      void* p = nullptr;
      MOE_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
      data_ = static_cast<T*>(p);
      capacity_ = n;
    }
    return data_;
  }

  T* data() const noexcept { return data_; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t bytes() const noexcept { return capacity_ * sizeof(T); }

 private:
  void release() noexcept {
    if (data_) (void)cudaFree(data_);  // never throws from a destructor; a failed free leaks
    data_ = nullptr;
    capacity_ = 0;
  }
  T* data_ = nullptr;
  std::size_t capacity_ = 0;
};

/// Copies host elements into `dst` (grown to fit) on `stream`. The copy is
/// from pageable memory, so it has finished reading `src` when this returns.
template <class T>
void upload(std::span<const T> src, Buffer<T>& dst, cudaStream_t stream) {
  dst.grow(src.size());
  if (!src.empty())
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.size_bytes(), cudaMemcpyHostToDevice, stream));
}

/// Copies n device elements into `dst` (resized) and waits for them.
template <class T>
void download(const T* src, std::size_t n, std::vector<T>& dst, cudaStream_t stream) {
  dst.resize(n);
  if (n == 0) return;
  MOE_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost, stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

/// An owning row-major [rows, cols] fp32 matrix in device memory: what
/// backend::Cuda returns a layer's y in (MoELayer's Output::y). Its views
/// are memory::Device views; to_host() brings it back.
class DeviceMatrix {
 public:
  DeviceMatrix() = default;
  DeviceMatrix(index_t rows, index_t cols) { resize(rows, cols); }

  /// A device copy of a host matrix (waits for the copy).
  static DeviceMatrix from_host(MatrixView<const float> m) {
    DeviceMatrix d(m.rows, m.cols);
    d.copy_from(m);
    return d;
  }

  index_t rows() const noexcept { return rows_; }
  index_t cols() const noexcept { return cols_; }
  float* data() const noexcept { return buffer_.data(); }

  /// [rows, cols]; keeps the allocation when it is large enough (contents undefined).
  void resize(index_t rows, index_t cols) {
    moe::detail::require(rows >= 0 && cols >= 0, ErrorCode::invalid_argument, "DeviceMatrix: shape ",
                         moe::detail::shape_str(rows, cols), " is negative");
    buffer_.grow(std::size_t(rows * cols));
    rows_ = rows;
    cols_ = cols;
  }

  MatrixView<float, memory::Device> view() const noexcept { return {data(), rows_, cols_}; }
  operator MatrixView<float, memory::Device>() const noexcept { return view(); }        // NOLINT: a view of it
  operator MatrixView<const float, memory::Device>() const noexcept { return view(); }  // NOLINT

  /// Copies a host matrix of the same shape in (rows may be padded on the host).
  void copy_from(MatrixView<const float> m, cudaStream_t stream = nullptr) {
    moe::detail::require(m.rows == rows_ && m.cols == cols_, ErrorCode::shape_mismatch,
                         "DeviceMatrix::copy_from: ", moe::detail::shape_str(m.rows, m.cols), " into ",
                         moe::detail::shape_str(rows_, cols_));
    if (rows_ * cols_ == 0) return;
    MOE_CUDA_CHECK(cudaMemcpy2DAsync(data(), std::size_t(cols_) * sizeof(float), m.data,
                                     std::size_t(m.row_stride) * sizeof(float), std::size_t(cols_) * sizeof(float),
                                     std::size_t(rows_), cudaMemcpyHostToDevice, stream));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  /// The matrix on the host (waits for the copy).
  Matrix to_host(cudaStream_t stream = nullptr) const {
    Matrix m(rows_, cols_);
    if (rows_ * cols_ == 0) return m;
    MOE_CUDA_CHECK(
        cudaMemcpyAsync(m.data(), data(), std::size_t(rows_ * cols_) * sizeof(float), cudaMemcpyDeviceToHost, stream));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
    return m;
  }

 private:
  Buffer<float> buffer_;
  index_t rows_ = 0;
  index_t cols_ = 0;
};

}  // namespace moe::cuda
