#pragma once
/// \file weight_store.hpp
/// WeightStore: owning storage for a layer's weights, with a seeded random
/// initialisation. The layer itself only holds views; this is what tests,
/// examples and benchmarks hand it when there is no checkpoint.

#include <cmath>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "moe/core/rng.hpp"
#include "moe/layer/moe_layer.hpp"

namespace moe {

/// [rows, cols] of N(0, scale²) drawn from the counter-based generator: seeded
/// inputs for examples, tests and benchmarks (element (r, c) depends only on
/// the seed, r and c).
inline Matrix random_normal_matrix(index_t rows, index_t cols, std::uint64_t seed, float scale = 1.0f) {
  Matrix m(rows, cols);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      m(r, c) = scale * normal({seed, 0}, RngStream::user, std::uint64_t(r), std::uint64_t(c));
  return m;
}

namespace detail {
/// Stores one float as `dtype` (F32, BF16 or F16, rounded to nearest even).
inline void store_as(DType dtype, float v, unsigned char* dst) noexcept {
  if (dtype == DType::F32) std::memcpy(dst, &v, 4);
  if (dtype == DType::BF16) {
    const Eigen::bfloat16 h(v);
    std::memcpy(dst, &h, 2);
  }
  if (dtype == DType::F16) {
    const Eigen::half h(v);
    std::memcpy(dst, &h, 2);
  }
}

/// The bytes of a [rows, cols] matrix of N(0, 1/cols) values in `dtype`:
/// element (r, c) depends only on (seed, id, r, c).
inline std::vector<unsigned char> random_weight_bytes(DType dtype, index_t rows, index_t cols, std::uint64_t seed,
                                                      std::uint64_t id) {
  const std::size_t width = std::size_t(size_of(dtype));
  std::vector<unsigned char> bytes(std::size_t(rows * cols) * width);
  const float scale = 1.0f / std::sqrt(float(cols));
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      store_as(dtype, scale * normal({seed, id}, RngStream::init, std::uint64_t(r), std::uint64_t(c)),
               bytes.data() + std::size_t(r * cols + c) * width);
  return bytes;
}
}  // namespace detail

class WeightStore {
 public:
  /// Random weights: N(0, 1/d_in) for every matrix (variance-preserving, so
  /// logits and activations stay O(1)), drawn from the counter-based
  /// generator: the same seed gives the same weights on any machine.
  /// Expert matrices are stored in `dtype`; the router is always F32.
  static WeightStore random(const LayerConfig& c, bool gated, DType dtype, std::uint64_t seed,
                            bool noise_weight = false) {
    detail::require(is_weight_dtype(dtype), ErrorCode::dtype_mismatch, "WeightStore::random: dtype ", name(dtype),
                    " is not a weight dtype");
    WeightStore s;
    s.config_ = c;
    std::uint64_t id = 0;
    s.gate_ = s.add(DType::F32, c.num_experts, c.d_model, seed, id++);
    if (noise_weight) s.noise_ = s.add(DType::F32, c.num_experts, c.d_model, seed, id++);
    for (index_t e = 0; e < c.num_experts; ++e) {
      Slots x;
      if (gated) x.gate = s.add(dtype, c.d_ff, c.d_model, seed, id++);
      x.up = s.add(dtype, c.d_ff, c.d_model, seed, id++);
      x.down = s.add(dtype, c.d_model, c.d_ff, seed, id++);
      s.experts_.push_back(x);
    }
    return s;
  }

  /// Adds a per-expert selection bias, zero-initialised (BiasedTopK:
  /// auxiliary-loss-free balancing). Call before view().
  WeightStore& with_selection_bias() {
    bias_.assign(std::size_t(config_.num_experts), 0.0f);
    return *this;
  }
  /// The selection bias (empty unless with_selection_bias was called):
  /// mutable, for BiasBalancer::update.
  std::span<float> selection_bias() noexcept { return bias_; }

  /// Views of everything, ready for a MoELayer. Valid while the store lives
  /// (an update of the values through parameters() shows through them), so
  /// a temporary store has none: `WeightStore::random(...).view()` does not
  /// compile. The views carry the store's version(): a layer that prepared
  /// a copy of them (packed panels) sees when they change.
  LayerWeights view() const& {
    LayerWeights w;
    w.version = version_;
    w.router.gate = matrix(gate_);
    w.router.noise = matrix(noise_);
    w.router.bias = bias_;
    for (const Slots& x : experts_) w.experts.push_back({matrix(x.gate), matrix(x.up), matrix(x.down)});
    return w;
  }
  LayerWeights view() const&& = delete;

  /// Counts writes to the weights: optimisers bump it after each step (the
  /// groups of train::parameter_groups carry it); call touch() after
  /// writing through parameters() yourself.
  const WeightVersion& version() const noexcept { return version_; }
  void touch() const noexcept { version_.bump(); }

  /// One weight as a mutable fp32 tensor, for an optimiser or a test.
  struct NamedWeight {
    std::string name;  ///< "router.gate", "router.noise", "experts.3.up", ...
    std::span<float> value;
    index_t rows = 0, cols = 0;
  };

  /// Every weight, by name, in a fixed order (router gate, router noise,
  /// then each expert's gate, up, down). Training updates weights in place,
  /// so they must be F32; throws moe::Error naming the first that is not.
  std::vector<NamedWeight> parameters() {
    std::vector<NamedWeight> out;
    const auto add = [&](int i, std::string name) {
      if (i < 0) return;
      Tensor& t = tensors_[std::size_t(i)];
      detail::require(t.dtype == DType::F32, ErrorCode::dtype_mismatch, "WeightStore::parameters: ", name, " is ",
                      moe::name(t.dtype), "; training updates weights in place and needs F32");
      out.push_back({std::move(name),
                     std::span<float>(reinterpret_cast<float*>(t.bytes.data()), std::size_t(t.rows * t.cols)), t.rows,
                     t.cols});
    };
    add(gate_, "router.gate");
    add(noise_, "router.noise");
    for (std::size_t e = 0; e < experts_.size(); ++e) {
      const std::string prefix = detail::cat("experts.", e, ".");
      add(experts_[e].gate, prefix + "gate");
      add(experts_[e].up, prefix + "up");
      add(experts_[e].down, prefix + "down");
    }
    return out;
  }

  const LayerConfig& config() const noexcept { return config_; }

 private:
  struct Tensor {
    std::vector<unsigned char> bytes;
    DType dtype = DType::F32;
    index_t rows = 0, cols = 0;
  };
  struct Slots {
    int gate = -1, up = -1, down = -1;
  };

  int add(DType dtype, index_t rows, index_t cols, std::uint64_t seed, std::uint64_t id) {
    tensors_.push_back({detail::random_weight_bytes(dtype, rows, cols, seed, id), dtype, rows, cols});
    return int(tensors_.size()) - 1;
  }

  WeightMatrix matrix(int i) const {
    if (i < 0) return {};
    const Tensor& t = tensors_[std::size_t(i)];
    return {t.bytes.data(), t.dtype, t.rows, t.cols};
  }

  LayerConfig config_;
  std::vector<Tensor> tensors_;
  int gate_ = -1, noise_ = -1;
  std::vector<Slots> experts_;
  std::vector<float> bias_;
  WeightVersion version_ = WeightVersion::tracked();
};

}  // namespace moe
