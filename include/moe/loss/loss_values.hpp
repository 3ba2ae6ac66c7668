#pragma once
/// \file loss_values.hpp
/// LossValues: the raw values a call's loss policy reported, by name
/// ("balance", "z", "importance", "load", or a custom loss's own). The
/// statistics hold them without knowing which losses exist, so a new loss
/// is a new policy and nothing else: it picks a name and sets its value.
/// A fixed small table (no allocation per call).

#include <array>
#include <optional>
#include <span>
#include <string_view>

#include "moe/core/error.hpp"

namespace moe {

class LossValues {
 public:
  static constexpr std::size_t capacity = 8;  ///< distinct names one call can report
  struct Entry {
    std::string_view name;  ///< the policy's name for it: a string literal (static storage)
    float value = 0;        ///< raw, no coefficient
  };

  /// Records `value` under `name`, replacing an earlier value of that name.
  void set(std::string_view name, float value) {
    for (std::size_t i = 0; i < size_; ++i)
      if (items_[i].name == name) {
        items_[i].value = value;
        return;
      }
    detail::require(size_ < capacity, ErrorCode::invalid_argument, "LossValues: more than ", capacity,
                    " losses reported in one call (adding '", name, "')");
    items_[size_++] = {name, value};
  }
  std::optional<float> get(std::string_view name) const noexcept {
    for (std::size_t i = 0; i < size_; ++i)
      if (items_[i].name == name) return items_[i].value;
    return std::nullopt;
  }
  void clear() noexcept { size_ = 0; }
  std::span<const Entry> entries() const noexcept { return {items_.data(), size_}; }

 private:
  std::array<Entry, capacity> items_{};
  std::size_t size_ = 0;
};

}  // namespace moe
