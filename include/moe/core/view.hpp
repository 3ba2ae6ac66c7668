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

/// Marks a parameter whose referent a returned or constructed view keeps
/// pointing at, so Clang's -Wdangling flags a view of a temporary that
/// outlives it (`MatrixView<const float> v = make_matrix();`).
#if defined(__clang__)
#define MOE_LIFETIMEBOUND [[clang::lifetimebound]]
#else
#define MOE_LIFETIMEBOUND
#endif

namespace detail {
/// Whether an Eigen object stores its rows contiguously in memory it exposes.
template <class D>
inline constexpr bool eigen_row_major_direct = (int(D::Flags) & Eigen::RowMajorBit) != 0 &&
                                               (int(D::Flags) & Eigen::DirectAccessBit) != 0;
/// Whether an Eigen object holds T's scalar (const or not).
template <class D, class T>
inline constexpr bool eigen_holds = std::is_same_v<typename D::Scalar, std::remove_const_t<T>>;
/// A row-major Eigen object of T's scalar with direct memory access, viewed from host code.
template <class D, class T, class Space>
concept EigenRowsOf = std::same_as<Space, memory::Host> && eigen_holds<D, T> && eigen_row_major_direct<D>;
/// Whether an Eigen object's elements may be written through it.
template <class D>
inline constexpr bool eigen_writable = (int(D::Flags) & Eigen::LvalueBit) != 0;
}  // namespace detail

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

  /// Views any row-major Eigen object whose rows are contiguous: a Matrix, a
  /// block of one (`x.topRows(4)`, `x.middleCols(2, 8)`, `x.row(3)`), a
  /// Map (with an OuterStride), a Ref. The view takes the object's outer
  /// stride as its row stride; an inner stride other than 1 is a moe::Error.
  /// A mutable view needs a writable object: a non-const lvalue, or a
  /// temporary block or map of one (itself a view). A const view takes
  /// anything, temporaries included, for the length of a call:
  /// `layer.forward(x.topRows(4))`. (Views are non-owning: keep the viewed
  /// object alive while the view is used.)
  template <class Derived>
  requires(std::is_const_v<T>&& detail::EigenRowsOf<Derived, T, Space>)
      MatrixView(const Eigen::DenseBase<Derived>& m MOE_LIFETIMEBOUND)  // NOLINT: implicit on purpose
      : MatrixView(from_eigen(m.derived())) {}
  template <class Derived>
  requires(!std::is_const_v<T> && detail::EigenRowsOf<Derived, T, Space> && detail::eigen_writable<Derived>)
      MatrixView(Eigen::DenseBase<Derived>& m MOE_LIFETIMEBOUND)  // NOLINT: implicit on purpose
      : MatrixView(from_eigen(m.derived())) {}
  /// A temporary block or map of writable memory (itself a view); never a temporary Matrix.
  template <class Derived>
  requires(!std::is_const_v<T> && detail::EigenRowsOf<Derived, T, Space> && detail::eigen_writable<Derived> &&
           !std::is_base_of_v<Eigen::PlainObjectBase<Derived>, Derived>)
      MatrixView(Eigen::DenseBase<Derived>&& m)  // NOLINT: implicit on purpose
      : MatrixView(from_eigen(m.derived())) {}

  /// A mutable view converts to a const one in the same space (never to another space).
  operator MatrixView<const T, Space>() const { return {data, rows, cols, row_stride}; }  // NOLINT

  T* row(index_t r) const noexcept { return data + r * row_stride; }
  T& operator()(index_t r, index_t c) const noexcept { return data[r * row_stride + c]; }
  bool empty() const noexcept { return rows == 0 || cols == 0; }

 private:
  template <class E>
  static MatrixView from_eigen(E& m) {
    if constexpr (E::InnerStrideAtCompileTime != 1)
      detail::require(m.innerStride() == 1, ErrorCode::invalid_argument, "MatrixView: the Eigen object's elements ",
                      "are ", m.innerStride(), " apart within a row; a view needs contiguous rows (inner stride 1)");
    return {m.data(), index_t(m.rows()), index_t(m.cols()),
            m.rows() > 1 ? index_t(m.outerStride()) : index_t(m.cols())};
  }
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
    return static_cast<const unsigned char*>(data) + bytes_of(dtype, r * cols);
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
          " is not a weight dtype (F32, BF16, F16 or a ggml block format)");
  require(cols % block_size(w.dtype) == 0, ErrorCode::shape_mismatch, what, ": ", cols, " columns are not whole ",
          name(w.dtype), " blocks of ", block_size(w.dtype), " values");
  require(w.rows == rows && w.cols == cols, ErrorCode::shape_mismatch, what, ": shape ", shape_str(w.rows, w.cols),
          ", expected ", shape_str(rows, cols));
}

/// Throws moe::Error(non_finite) when a weight holds NaN or infinity, naming
/// the weight, the first such element and its value.
inline void require_finite(const WeightMatrix& w, std::string_view what) {
  if (w.empty()) return;
  const index_t at = first_non_finite(w.data, w.dtype, w.rows * w.cols);
  require(at < 0, ErrorCode::non_finite, what, " ", shape_str(w.rows, w.cols), " ", name(w.dtype), ": element [",
          at / (w.cols > 0 ? w.cols : 1), ", ", at % (w.cols > 0 ? w.cols : 1), "] is ",
          load_as_float(w.data, w.dtype, at < 0 ? 0 : at));
}
}  // namespace detail

}  // namespace moe
