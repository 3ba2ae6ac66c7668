#pragma once
/// \file weight_version.hpp
/// WeightVersion: a counter shared by whoever owns some weights and
/// everything that was prepared from them.
///
/// A backend may prepare a copy of the weights (panels, bf16, int8, a device
/// upload). Once the weights change (an optimiser step writes them in
/// place), such a copy is stale: computing with it would mix old and new
/// weights. The owner bumps the version whenever it writes; a preparation
/// records the version it copied, and the layer refuses to run on a copy
/// whose version is behind. Memory addresses are never used to recognise
/// weights (a freed and reused address would look the same).
///
/// Weights nobody writes (an mmap'ed checkpoint) carry an untracked version:
/// always 0, never stale.

#include <atomic>
#include <cstdint>
#include <memory>

namespace moe {

class WeightVersion {
 public:
  /// Untracked: value() is always 0.
  WeightVersion() = default;
  /// A new counter at 0, shared by every copy of the returned object.
  static WeightVersion tracked() {
    WeightVersion v;
    v.counter_ = std::make_shared<std::atomic<std::uint64_t>>(0);
    return v;
  }

  bool is_tracked() const noexcept { return counter_ != nullptr; }
  std::uint64_t value() const noexcept { return counter_ ? counter_->load(std::memory_order_acquire) : 0; }
  /// Marks the weights as written (a no-op when untracked).
  void bump() const noexcept {
    if (counter_) counter_->fetch_add(1, std::memory_order_acq_rel);
  }

 private:
  std::shared_ptr<std::atomic<std::uint64_t>> counter_;
};

}  // namespace moe
