#pragma once
/// \file activation.hpp
/// Activation functions, written once for a float and for an xsimd batch so
/// the reference and the SIMD backend share the formula. `derivative` is
/// the slope at z, for backward (scalar only: training runs in fp32 loops
/// and GEMMs, not in the inference kernels).

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
  /// d/dz z·σ(z) = σ(z) · (1 + z·(1 − σ(z)))
  float derivative(float z) const {
    const float s = 1.0f / (1.0f + std::exp(-z));
    return s * (1.0f + z * (1.0f - s));
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
  /// d/dz z·Φ(z) = Φ(z) + z·φ(z)
  float derivative(float z) const {
    const float cdf = 0.5f * (1.0f + std::erf(z * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * std::exp(-0.5f * z * z);
    return cdf + z * pdf;
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
  /// d/dz ½z(1 + tanh u), u = √(2/π)(z + 0.044715 z³)
  float derivative(float z) const {
    const float u = 0.7978845608028654f * (z + 0.044715f * z * z * z);
    const float th = std::tanh(u);
    const float du = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * z * z);
    return 0.5f * (1.0f + th) + 0.5f * z * (1.0f - th * th) * du;
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
  /// 1 for z > 0, else 0 (the subgradient torch uses at 0).
  float derivative(float z) const { return z > 0.0f ? 1.0f : 0.0f; }
};

template <class A>
concept Activation = requires(const A& a, float z) {
  { a(z) } -> std::same_as<float>;
  { a.derivative(z) } -> std::same_as<float>;
  { A::name } -> std::convertible_to<std::string_view>;
};

}  // namespace moe
