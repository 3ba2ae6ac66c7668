#pragma once
/// \file panels.hpp
/// Weights packed into panels: the layout the broadcast micro-kernel streams.
///
/// A weight W [N, K] (nn.Linear layout, rows = outputs) becomes ⌈N/NR⌉
/// panels of NR output features. Panel p stores, for k = 0 … K-1 in order,
/// the NR weights W[p·NR + j, k] side by side, so the kernel reads one panel
/// front to back with unit stride: every k step loads NR weights (two SIMD
/// vectors) and multiplies them by one broadcast activation per token row.
/// Rows past N are zero, so tails need no special case in the kernel.
///
/// Two layouts of a panel's NR columns:
///   single   columns j = 0 … NR-1 are outputs p·NR + j
///   gate/up  columns 0 … W-1 are gate rows p·W + j, columns W … 2W-1 the up
///            rows of the same features: one panel gives gate and up of W
///            hidden features, so SwiGLU is applied as the tile is stored.
///
/// Element types (the packing target, chosen by the backend's numerics):
///   F32   fp32 weights (F32 and F16 checkpoints under numerics::AsStored)
///   BF16  bf16 (half the bytes to stream), the two vectors of a k step
///         interleaved as 32-bit words, low half = column i, high half =
///         column W + i: a 32-bit shift and a mask widen them to two fp32
///         vectors. Other dtypes are rounded to bf16 (nearest even).
///   BF16 in k pairs (`pairs`, numerics::Bf16Compute on AVX512-BF16): depth
///         padded to even with a zero, per pair of k each column's two bf16
///         side by side (k even in the low half): what vdpbf16ps reads
///         (pair_gemm.hpp).
///   I8    int8 with one fp32 scale per output (symmetric: max |w| ↦ 127)
///         and the sum of each output's int8 weights (the zero-point
///         correction of asymmetric activations). Depth is padded to a
///         multiple of 4 with zeros and stored in quads: per 4 k, each
///         column's 4 bytes side by side (what vpmaddubsw/vpdpbusd read).
///
/// Packing is explicit and costs a copy of the weights (bytes() says how
/// much); the unpacked views stay valid and unused.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/huge_pages.hpp"
#include "moe/expert/ffn.hpp"

namespace moe::backend::cpu {

/// Bytes allocated on a 64-byte boundary (one cache line), zero-filled;
/// blocks of 2 MiB or more on transparent huge pages (huge_pages.hpp): the
/// kernel streams a weight matrix panel by panel, and with 4 KiB pages
/// every few panels would cost a TLB miss.
class AlignedBytes {
 public:
  AlignedBytes() = default;
  explicit AlignedBytes(std::size_t n)
      : size_(n), data_(static_cast<std::byte*>(moe::detail::allocate_stream_bytes(n)), Free{n}) {
    std::memset(data_.get(), 0, n);
  }
  std::byte* data() noexcept { return data_.get(); }
  const std::byte* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  struct Free {
    std::size_t n = 0;
    void operator()(std::byte* p) const noexcept { moe::detail::free_stream_bytes(p, n); }
  };
  std::size_t size_ = 0;
  std::unique_ptr<std::byte, Free> data_{nullptr, Free{0}};
};

enum class PanelLayout { single, gate_up };

/// One weight matrix (or a gate/up pair) in panels of `width` columns.
struct PanelMatrix {
  DType dtype = DType::F32;  ///< F32, BF16 or I8
  PanelLayout layout = PanelLayout::single;
  bool pairs = false;   ///< BF16 in k pairs (vdpbf16ps) instead of column-interleaved words
  index_t outputs = 0;  ///< N: output features (d_ff for a gate/up pair)
  index_t depth = 0;    ///< K: inputs
  index_t width = 0;    ///< NR: columns per panel
  index_t panels = 0;
  AlignedBytes storage;
  std::vector<float> scale;        ///< I8: [panels · NR] dequantisation scale of each column
  std::vector<std::int32_t> sums;  ///< I8: [panels · NR] Σ_k of each column's int8 weights

  /// Output features one panel yields: NR, or W = NR/2 for gate/up.
  index_t features_per_panel() const noexcept { return layout == PanelLayout::gate_up ? width / 2 : width; }
  /// Depth as stored: I8 pads it to whole quads of 4, BF16 pairs to even.
  index_t stored_depth() const noexcept {
    return dtype == DType::I8 ? (depth + 3) / 4 * 4 : pairs ? (depth + 1) / 2 * 2 : depth;
  }
  std::size_t bytes() const noexcept {
    return storage.size() + scale.size() * sizeof(float) + sums.size() * sizeof(std::int32_t);
  }
  /// Start of panel p at depth k (for I8, k a multiple of 4; for pairs, even).
  const std::byte* at(index_t p, index_t k) const noexcept {
    return storage.data() + std::size_t((p * stored_depth() + k) * width) * size_of(dtype);
  }
};

namespace detail {

/// Where column j of a k step lands among the step's NR elements.
inline index_t column_slot(DType stored, index_t j, index_t width) noexcept {
  if (stored != DType::BF16) return j;
  const index_t half = width / 2;
  return j < half ? 2 * j : 2 * (j - half) + 1;  // word j % W: low half column j, high half column W + j
}

/// Copies W's row `row` (K values) into column `column` (slot `slot`) of panel p.
inline void pack_row(const WeightMatrix& w, index_t row, PanelMatrix& out, index_t p, index_t column, index_t slot) {
  const index_t K = out.depth, NR = out.width;
  if (is_block_quantised(w.dtype)) {  // dequantised once, not a block per element
    thread_local std::vector<float> values;
    values.resize(std::size_t(K));
    widen_to_float(w.data, w.dtype, row * K, K, values.data());
    return pack_row(weight_view(values.data(), 1, K), 0, out, p, column, slot);
  }
  if (out.dtype == DType::BF16 && out.pairs) {
    auto* dst = reinterpret_cast<std::uint16_t*>(out.storage.data()) + p * out.stored_depth() * NR + column * 2;
    for (index_t k = 0; k < K; ++k) dst[(k / 2) * 2 * NR + k % 2] = bf16_bits(w.at(row, k));
  } else if (out.dtype == DType::BF16) {
    auto* dst = reinterpret_cast<std::uint16_t*>(out.storage.data()) + p * K * NR + slot;
    if (w.dtype == DType::BF16) {
      const auto* src = reinterpret_cast<const std::uint16_t*>(w.row_bytes(row));
      for (index_t k = 0; k < K; ++k) dst[k * NR] = src[k];
    } else {
      for (index_t k = 0; k < K; ++k) dst[k * NR] = bf16_bits(w.at(row, k));
    }
  } else if (out.dtype == DType::I8) {
    float max_abs = 0.0f;
    for (index_t k = 0; k < K; ++k) max_abs = std::max(max_abs, std::abs(w.at(row, k)));
    const float scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
    auto* dst = reinterpret_cast<std::int8_t*>(out.storage.data()) + p * out.stored_depth() * NR + column * 4;
    std::int32_t sum = 0;
    for (index_t k = 0; k < K; ++k) {
      const auto q = std::int8_t(std::clamp(std::nearbyint(w.at(row, k) / scale), -127.0f, 127.0f));
      dst[(k / 4) * 4 * NR + k % 4] = q;
      sum += q;
    }
    out.scale[std::size_t(p * NR + column)] = scale;
    out.sums[std::size_t(p * NR + column)] = sum;
  } else {
    auto* dst = reinterpret_cast<float*>(out.storage.data()) + p * K * NR + slot;
    for (index_t k = 0; k < K; ++k) dst[k * NR] = w.at(row, k);
  }
}

}  // namespace detail

/// Packs W [N, K] (single) or the pair gate, up [N, K] (gate_up) into panels
/// of `width` columns (2 SIMD vectors of floats) of dtype `target` (BF16 in
/// k pairs if `pairs`). Panels are independent: `for_each_panel(count, fn)`
/// may run fn(p) for p in [0, count) in parallel.
template <class ForEach>
PanelMatrix pack_panels(const WeightMatrix& w, const WeightMatrix* up, index_t width, DType target,
                        ForEach&& for_each_panel, bool pairs = false) {
  moe::detail::require(width > 0 && width % 2 == 0, ErrorCode::invalid_argument, "pack_panels: width ", width,
                       " must be even and > 0");
  moe::detail::require(up == nullptr || (up->rows == w.rows && up->cols == w.cols && up->dtype == w.dtype),
                       ErrorCode::shape_mismatch, "pack_panels: gate and up differ in shape or dtype");
  moe::detail::require(target == DType::F32 || target == DType::BF16 || target == DType::I8, ErrorCode::unsupported,
                       "pack_panels: cannot pack into ", name(target));
  PanelMatrix out;
  out.dtype = target;
  out.layout = up ? PanelLayout::gate_up : PanelLayout::single;
  out.pairs = pairs && target == DType::BF16;
  out.outputs = w.rows;
  out.depth = w.cols;
  out.width = width;
  const index_t per_panel = out.features_per_panel();
  out.panels = (w.rows + per_panel - 1) / per_panel;
  out.storage = AlignedBytes(std::size_t(out.panels * out.stored_depth() * width) * size_of(out.dtype));
  if (target == DType::I8) {
    out.scale.assign(std::size_t(out.panels * width), 1.0f);
    out.sums.assign(std::size_t(out.panels * width), 0);
  }
  for_each_panel(out.panels, [&](index_t p) {
    for (index_t j = 0; j < per_panel; ++j) {
      const index_t row = p * per_panel + j;
      if (row >= w.rows) break;  // the tail stays zero
      if (up) {
        detail::pack_row(w, row, out, p, j, detail::column_slot(out.dtype, j, width));
        detail::pack_row(*up, row, out, p, per_panel + j, detail::column_slot(out.dtype, per_panel + j, width));
      } else {
        detail::pack_row(w, row, out, p, j, detail::column_slot(out.dtype, j, width));
      }
    }
  });
  return out;
}

/// One expert packed: gate and up fused for gated FFNs (or up alone), down.
struct PackedExpert {
  PanelMatrix up;  ///< gate_up layout for gated FFNs, single otherwise
  PanelMatrix down;
  std::size_t bytes() const noexcept { return up.bytes() + down.bytes(); }
};

}  // namespace moe::backend::cpu
