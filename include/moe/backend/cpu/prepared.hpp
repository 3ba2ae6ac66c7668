#pragma once
/// \file prepared.hpp
/// cpu::Prepared: the experts as backend::Cpu computes with them, owned by
/// whoever prepared them (the layer). Either the views themselves (fp32
/// numerics on the checkpoint as stored: nothing copied, nothing to go
/// stale) or panels packed from them (panels.hpp: fp32, bf16 or int8, the
/// numerics' choice), which are a copy: they record the weights' version,
/// and the layer refuses to run them once the weights have moved on.

#include <memory>
#include <span>
#include <vector>

#include "moe/backend/backend.hpp"
#include "moe/backend/cpu/panels.hpp"

namespace moe::backend::cpu {

struct Prepared {
  PreparedFrom from;
  std::vector<ExpertWeights> views;                         ///< [E] what it was prepared from (backward reads them)
  std::shared_ptr<const std::vector<PackedExpert>> packed;  ///< [E] panels; null: computes on the views

  bool is_packed() const noexcept { return packed != nullptr; }
  /// Memory held by the panels (0 on views).
  std::size_t bytes() const noexcept {
    std::size_t b = 0;
    if (packed)
      for (const PackedExpert& e : *packed) b += e.bytes();
    return b;
  }
};

/// Packs every expert into panels of `width` columns of dtype `target`:
/// gate and up fused for gated FFNs (their layout tells the kernel which).
/// Panels are independent: for_each_panel(count, fn) may run them in parallel.
template <class ForEach>
std::shared_ptr<const std::vector<PackedExpert>> pack_experts(std::span<const ExpertWeights> w, index_t width,
                                                              DType target, ForEach&& for_each_panel,
                                                              bool pairs = false) {
  auto packed = std::make_shared<std::vector<PackedExpert>>();
  packed->reserve(w.size());
  for (const ExpertWeights& e : w) {
    PackedExpert p;
    p.up = pack_panels(e.gate.empty() ? e.up : e.gate, e.gate.empty() ? nullptr : &e.up, width, target, for_each_panel,
                       pairs);
    p.down = pack_panels(e.down, nullptr, width, target, for_each_panel, pairs);
    packed->push_back(std::move(p));
  }
  return packed;
}

}  // namespace moe::backend::cpu
