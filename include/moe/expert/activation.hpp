#pragma once
/// \file activation.hpp
/// Activation functions, written once for a float and for an xsimd batch so
/// the reference and the SIMD backend share the formula.

#include <cmath>
#include <string_view>

namespace moe {

/// silu(z) = z · sigmoid(z) (Mixtral's `hidden_act = "silu"`).
struct SiLU {
  static constexpr std::string_view name = "silu";
  template <class X>
  X operator()(X z) const {
    using std::exp;
    return z / (X(1.0f) + exp(-z));
  }
};

/// Exact GeLU, z · Φ(z) = z/2 · (1 + erf(z/√2)) (torch `gelu`, HF "gelu").
struct GeLU {
  static constexpr std::string_view name = "gelu";
  template <class X>
  X operator()(X z) const {
    using std::erf;
    return X(0.5f) * z * (X(1.0f) + erf(z * X(0.70710678118654752f)));
  }
};

/// tanh approximation of GeLU (HF "gelu_new", T5 v1.1 / Switch's gated-gelu).
struct GeLUTanh {
  static constexpr std::string_view name = "gelu_tanh";
  template <class X>
  X operator()(X z) const {
    using std::tanh;
    const X inner = X(0.7978845608028654f) * (z + X(0.044715f) * z * z * z);
    return X(0.5f) * z * (X(1.0f) + tanh(inner));
  }
};

/// relu(z) = max(z, 0) (T5 / Switch dense expert).
struct ReLU {
  static constexpr std::string_view name = "relu";
  template <class X>
  X operator()(X z) const {
    using std::fmax;
    return fmax(z, X(0.0f));
  }
};

template <class A>
concept Activation = requires(const A& a, float z) {
  { a(z) } -> std::same_as<float>;
  { A::name } -> std::convertible_to<std::string_view>;
};

}  // namespace moe
