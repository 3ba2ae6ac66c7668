#pragma once
/// \file view.hpp
/// Non-owning views. A layer never owns its weights: it computes on views of
/// memory someone else holds (a std::vector, an Eigen matrix, an mmap'ed
/// checkpoint).

#include <Eigen/Core>

#include <concepts>
#include <string>
#include <type_traits>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Row-major Eigen matrix: the owning type outputs come back in.
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Where a view's memory lives. A view's space is part of its type, so a
/// kernel that takes host views cannot be handed device memory (or the
/// reverse): the mistake does not compile. Host is the default everywhere.
namespace memory {
struct Host {
  static constexpr const char* name = "host";
};
struct Device {
  static constexpr const char* name = "device";
};
template <class S>
concept Space = std::same_as<S, Host> || std::same_as<S, Device>;
}  // namespace memory

/// A row-major [rows, cols] window on memory in space `Space`; rows may be
/// padded (row_stride). Only host views can be read on the host (operator(),
/// row() are for kernels running where the memory is) and only host views
/// wrap Eigen matrices.
template <class T, memory::Space Space = memory::Host>
struct MatrixView {
  using space = Space;
  T* data = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t row_stride = 0;  ///< elements between the starts of two rows (>= cols)

  MatrixView() = default;
  MatrixView(T* d, index_t r, index_t c) : data(d), rows(r), cols(c), row_stride(c) {}
  MatrixView(T* d, index_t r, index_t c, index_t stride) : data(d), rows(r), cols(c), row_stride(stride) {}

  /// Views any row-major Eigen matrix (or a const one, for MatrixView<const float>).
  template <class Derived>
  requires(std::is_same_v<Space, memory::Host>&& std::is_same_v<std::remove_const_t<T>, typename Derived::Scalar> &&
           (static_cast<int>(Derived::Flags) & Eigen::RowMajorBit) != 0)
      MatrixView(Eigen::PlainObjectBase<Derived>& m)  // NOLINT: implicit on purpose
      : data(m.data()), rows(m.rows()), cols(m.cols()), row_stride(m.cols()) {}
  template <class Derived>
  requires(std::is_same_v<Space, memory::Host>&& std::is_const_v<T>&&
               std::is_same_v<std::remove_const_t<T>, typename Derived::Scalar> &&
           (static_cast<int>(Derived::Flags) & Eigen::RowMajorBit) != 0)
      MatrixView(const Eigen::PlainObjectBase<Derived>& m)  // NOLINT: implicit on purpose
      : data(m.data()), rows(m.rows()), cols(m.cols()), row_stride(m.cols()) {}

  /// A mutable view converts to a const one in the same space (never to another space).
  operator MatrixView<const T, Space>() const { return {data, rows, cols, row_stride}; }  // NOLINT

  T* row(index_t r) const noexcept { return data + r * row_stride; }
  T& operator()(index_t r, index_t c) const noexcept { return data[r * row_stride + c]; }
  bool empty() const noexcept { return rows == 0 || cols == 0; }
};

/// A [rows, cols] row-major weight matrix of any weight dtype, applied as
/// y = x · Wᵀ (nn.Linear's layout: rows = outputs, cols = inputs).
/// Type-erased on purpose: the dtype is a property of the checkpoint, known
/// at run time, and one layer type runs on F32, BF16 or F16 weights.
template <memory::Space Space = memory::Host>
struct WeightMatrixIn {
  using space = Space;
  const void* data = nullptr;
  DType dtype = DType::F32;
  index_t rows = 0;
  index_t cols = 0;

  bool empty() const noexcept { return data == nullptr; }
  float at(index_t r, index_t c) const noexcept { return load_as_float(data, dtype, r * cols + c); }
  /// Element pointer of row r, in bytes (for dtype-aware kernels).
  const unsigned char* row_bytes(index_t r) const noexcept {
    return static_cast<const unsigned char*>(data) + r * cols * size_of(dtype);
  }
};
using WeightMatrix = WeightMatrixIn<memory::Host>;

/// Views a buffer of float, Eigen::bfloat16 or Eigen::half as a weight matrix.
template <class T>
WeightMatrix weight_view(const T* data, index_t rows, index_t cols) {
  return {data, dtype_of_v<T>, rows, cols};
}

namespace detail {
inline std::string shape_str(index_t r, index_t c) { return cat("[", r, ", ", c, "]"); }

/// Checks a weight's shape and dtype, naming it in the error.
inline void require_weight(const WeightMatrix& w, std::string_view what, index_t rows, index_t cols) {
  require(!w.empty(), ErrorCode::invalid_argument, what, ": weight is missing (null data), expected ",
          shape_str(rows, cols));
  require(is_weight_dtype(w.dtype), ErrorCode::dtype_mismatch, what, ": dtype ", name(w.dtype),
          " is not a weight dtype (F32, BF16 or F16)");
  require(w.rows == rows && w.cols == cols, ErrorCode::shape_mismatch, what, ": shape ", shape_str(w.rows, w.cols),
          ", expected ", shape_str(rows, cols));
}
}  // namespace detail

}  // namespace moe
