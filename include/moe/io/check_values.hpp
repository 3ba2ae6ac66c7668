#pragma once
/// \file check_values.hpp
/// An opt-in scan of a checkpoint's weights for NaN and infinity.
///
/// Loading checks every shape, dtype and offset, but not values: reading
/// every byte of a 90 GB checkpoint at load would cost what mapping it saves.
/// A NaN in a router row is caught when it reaches a logit; one in an expert
/// weight would flow into the output. This scan names the first one instead
/// (`moe-mixtral info --check-values`; for a single layer,
/// LayerConfig::check_values).

#include <cstddef>
#include <string>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/safetensors.hpp"

namespace moe::io {

/// Element index → "[i, j, ...]" for a tensor of this shape.
inline std::string element_string(index_t at, const std::vector<index_t>& shape) {
  std::vector<index_t> idx(shape.size(), 0);
  for (std::size_t d = shape.size(); d-- > 0;) {
    const index_t n = shape[d] > 0 ? shape[d] : 1;
    idx[d] = at % n;
    at /= n;
  }
  return shape_string(idx);
}

/// Throws moe::Error(non_finite) naming the first NaN or infinite value of a
/// floating-point tensor (F32, BF16, F16; others have none): its file, name,
/// shape, dtype, element and value.
inline void require_finite_values(const TensorView& t) {
  if (!is_weight_dtype(t.dtype)) return;
  const index_t at = first_non_finite(t.data, t.dtype, t.numel());
  detail::require(at < 0, ErrorCode::non_finite, t.file, ": tensor '", t.name, "' ", shape_string(t.shape), " ",
                  name(t.dtype), ": element ", element_string(at < 0 ? 0 : at, t.shape), " is ",
                  load_as_float(t.data, t.dtype, at < 0 ? 0 : at));
}

/// Scans every tensor of a checkpoint, in name order, with
/// require_finite_values; returns the number of elements checked.
inline std::size_t check_values(const Checkpoint& checkpoint) {
  std::size_t elements = 0;
  for (const std::string& n : checkpoint.names()) {
    const TensorView& t = checkpoint.tensor(n);
    require_finite_values(t);
    if (is_weight_dtype(t.dtype)) elements += std::size_t(t.numel());
  }
  return elements;
}

}  // namespace moe::io
