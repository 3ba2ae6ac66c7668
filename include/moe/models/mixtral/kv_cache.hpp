#pragma once
/// \file kv_cache.hpp
/// The keys and values a decoder has computed so far, so that each new token
/// costs one position of attention work instead of the whole prefix.
///
/// Per layer, entries are (position, key [nkv·hd], value [nkv·hd]) after
/// RoPE. Without a sliding window the cache grows with the sequence. With a
/// window W a query sees at most the W latest keys (itself included), so the
/// cache is a ring of W entries: the oldest is overwritten, memory stays
/// W · 2 · nkv · hd floats per layer however long the generation runs.
/// Keys and values live on huge pages once large (huge_pages.hpp): a
/// position's row of Mixtral's cache is 4 KiB, so on 4 KiB pages decode
/// attention would take a TLB miss on every key it reads.

#include <optional>
#include <vector>

#include "moe/core/attention.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/detail/huge_pages.hpp"

namespace moe::mixtral {

class LayerKvCache {
 public:
  LayerKvCache(index_t width, std::optional<index_t> window) : width_(width), window_(window) {}

  index_t size() const noexcept { return size_; }  ///< entries held
  /// The i-th entry, oldest first (i in [0, size())).
  index_t position(index_t i) const noexcept { return positions_[slot(i)]; }
  const float* key(index_t i) const noexcept { return keys_.data() + slot(i) * width_; }
  const float* value(index_t i) const noexcept { return values_.data() + slot(i) * width_; }

  void append(index_t position, const float* key, const float* value) {
    std::size_t s;
    if (window_ && size_ == *window_) {  // full ring: overwrite the oldest
      s = std::size_t(start_);
      start_ = (start_ + 1) % *window_;
    } else {
      s = std::size_t(size_++);
      if (s >= positions_.size()) grow();
    }
    positions_[s] = position;
    std::copy(key, key + width_, keys_.begin() + std::ptrdiff_t(s * std::size_t(width_)));
    std::copy(value, value + width_, values_.begin() + std::ptrdiff_t(s * std::size_t(width_)));
  }

  /// The entries as runs of consecutive memory, oldest first: one run, or
  /// two once a full ring has wrapped (its tail, then its head).
  std::vector<KeyValueRun> runs() const {
    std::vector<KeyValueRun> out;
    const auto run = [&](index_t from, index_t count) {
      if (count > 0)
        out.push_back({keys_.data() + from * width_, values_.data() + from * width_, positions_.data() + from, count});
    };
    const index_t in_tail = window_ ? std::min(size_, *window_ - start_) : size_;
    run(start_, in_tail);
    run(0, size_ - in_tail);
    return out;
  }

  std::size_t bytes() const noexcept { return (keys_.capacity() + values_.capacity()) * sizeof(float); }

 private:
  std::size_t slot(index_t i) const noexcept { return std::size_t(window_ ? (start_ + i) % *window_ : i); }
  void grow() {
    const std::size_t n = window_ ? std::size_t(*window_) : std::max<std::size_t>(16, positions_.size() * 2);
    positions_.resize(n);
    keys_.resize(n * std::size_t(width_));
    values_.resize(n * std::size_t(width_));
  }

  index_t width_;
  std::optional<index_t> window_;
  index_t size_ = 0;
  index_t start_ = 0;  // ring head: the oldest entry when the ring is full
  std::vector<index_t> positions_;
  std::vector<float, moe::detail::StreamAllocator<float>> keys_, values_;
};

/// One LayerKvCache per decoder layer, and the next position to fill.
class KvCache {
 public:
  KvCache(index_t layers, index_t width, std::optional<index_t> window) {
    for (index_t l = 0; l < layers; ++l) layers_.emplace_back(width, window);
  }
  index_t next_position() const noexcept { return next_; }
  LayerKvCache& layer(index_t l) { return layers_.at(std::size_t(l)); }
  /// Called once all layers have appended `count` new positions.
  void advance(index_t count) noexcept { next_ += count; }
  std::size_t bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& l : layers_) n += l.bytes();
    return n;
  }

 private:
  std::vector<LayerKvCache> layers_;
  index_t next_ = 0;
};

}  // namespace moe::mixtral
