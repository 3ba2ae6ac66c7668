#pragma once
/// \file sharded_writer.hpp
/// Writes a checkpoint's tensors into a folder the way Hugging Face does:
/// one `model.safetensors`, or, when they pass the shard size, shards
/// `model-0000k-of-0000N.safetensors` and `model.safetensors.index.json`
/// (`metadata.total_size` in bytes, `weight_map` name → shard file).
///
/// Tensors fill shards in the order they are added; a new shard starts when
/// the next tensor would take the current one past `max_shard_bytes` (a
/// tensor larger than that gets a shard of its own), as transformers and
/// mergekit split. Tensors added with a Fill are produced as their shard is
/// written, so memory holds one of them at a time.

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "moe/io/checkpoint.hpp"
#include "moe/io/safetensors_writer.hpp"

namespace moe::io {

/// Hugging Face's name of shard i (from 0) of n: model-00001-of-00003.safetensors;
/// model.safetensors when there is one.
inline std::string shard_file_name(std::size_t i, std::size_t n) {
  if (n <= 1) return std::string(Checkpoint::single_file);
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

class ShardedWriter {
 public:
  explicit ShardedWriter(std::size_t max_shard_bytes) : max_shard_bytes_(max_shard_bytes) {
    detail::require(max_shard_bytes > 0, ErrorCode::invalid_argument, "ShardedWriter: the shard size must be > 0");
  }

  /// Adds a tensor whose bytes `fill` writes at write time.
  void add(std::string name, DType dtype, std::vector<index_t> shape, SafeTensorsWriter::Fill fill) {
    detail::require(!weight_map_.count(name), ErrorCode::invalid_argument, "ShardedWriter: tensor '", name,
                    "' added twice");
    std::size_t bytes = std::size_t(size_of(dtype));
    for (index_t d : shape) bytes *= std::size_t(d);
    if (shards_.empty() || (!shards_.back().empty() && shards_.back().data_bytes() + bytes > max_shard_bytes_))
      shards_.emplace_back();
    weight_map_[name] = shards_.size() - 1;
    shards_.back().add(std::move(name), dtype, std::move(shape), std::move(fill));
    total_bytes_ += bytes;
  }
  /// Metadata of every shard's header (e.g. {"format": "pt"}).
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  std::size_t shard_count() const noexcept { return shards_.size(); }
  std::size_t total_bytes() const noexcept { return total_bytes_; }
  /// The file shard i goes to.
  std::string shard_name(std::size_t i) const { return shard_file_name(i, shards_.size()); }

  /// Writes the shards (and the index, if more than one) into `dir`;
  /// `on_shard(i, name)` is called before each, for progress.
  void write(const std::filesystem::path& dir,
             const std::function<void(std::size_t, const std::string&)>& on_shard = {}) {
    std::filesystem::create_directories(dir);
    for (std::size_t i = 0; i < shards_.size(); ++i) {
      if (on_shard) on_shard(i, shard_name(i));
      for (const auto& [k, v] : metadata_) shards_[i].set_metadata(k, v);
      shards_[i].write(dir / shard_name(i));
    }
    const std::filesystem::path index = dir / Checkpoint::index_file;
    if (shards_.size() <= 1) {
      std::filesystem::remove(index);
      return;
    }
    nlohmann::json map = nlohmann::json::object();
    for (const auto& [name, shard] : weight_map_) map[name] = shard_name(shard);
    std::ofstream out(index);
    out << nlohmann::json{{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", map}}.dump(2) << "\n";
    detail::require(bool(out), ErrorCode::bad_file, index.string(), ": write failed");
  }

 private:
  std::size_t max_shard_bytes_;
  std::vector<SafeTensorsWriter> shards_;
  std::map<std::string, std::size_t> weight_map_;  // sorted, as transformers writes it
  std::map<std::string, std::string> metadata_;
  std::size_t total_bytes_ = 0;
};

}  // namespace moe::io
