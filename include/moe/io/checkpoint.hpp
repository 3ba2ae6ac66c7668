#pragma once
/// \file checkpoint.hpp
/// A Hugging Face checkpoint: its tensors, wherever they are stored.
///
/// Three layouts exist:
///   model.safetensors                          one file holds every tensor
///   model.safetensors.index.json               {"weight_map": {tensor: shard}}
///   model-00001-of-0000N.safetensors ...       the shards it names
///   NAME.gguf                                  a llama.cpp file (not a folder):
///                                              its tensors under their
///                                              transformers names (gguf_hf_names.hpp),
///                                              in their stored ggml types
/// Every file is mapped (no copy) and validated on open. For a sharded
/// folder the index and the shards must agree exactly: each tensor sits in
/// the shard the index names, no shard holds a tensor the index does not
/// list, no tensor is stored twice.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/io/gguf.hpp"
#include "moe/io/gguf_hf_names.hpp"
#include "moe/io/mapped_file.hpp"
#include "moe/io/safetensors.hpp"

namespace moe::io {

/// Limits on the JSON files of a checkpoint (config.json, the shard index):
/// real ones are a few kB to a few MB and nest a few levels deep. A deeper
/// document would be refused before anything recurses over it (printing it
/// into an error message, for one).
struct JsonLimits {
  std::size_t max_bytes = std::size_t(64) << 20;
  int max_depth = 64;
};

/// Reads a whole JSON file (a regular file, within `limits`), naming the
/// file in every error.
inline nlohmann::json read_json(const std::filesystem::path& path, JsonLimits limits = {}) {
  const MappedFile file(path);  // refuses directories, FIFOs and devices before opening
  detail::require(file.size() <= limits.max_bytes, ErrorCode::bad_file, path.string(), ": ", file.size(),
                  " bytes, more than the ", limits.max_bytes, " a JSON file here may have");
  const auto depth_limit = [&](int depth, nlohmann::json::parse_event_t, const nlohmann::json&) {
    detail::require(depth <= limits.max_depth, ErrorCode::bad_file, path.string(), ": JSON nested deeper than ",
                    limits.max_depth, " levels");
    return true;
  };
  const char* begin = reinterpret_cast<const char*>(file.data());
  try {
    return nlohmann::json::parse(begin, begin + file.size(), depth_limit);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::bad_file, detail::cat(path.string(), ": not valid JSON (", e.what(), ")"));
  }
}

class Checkpoint {
 public:
  static constexpr std::string_view single_file = "model.safetensors";
  static constexpr std::string_view index_file = "model.safetensors.index.json";

  /// Whether `path` names a GGUF file (by its extension) rather than a folder.
  static bool is_gguf(const std::filesystem::path& path) {
    return path.extension() == ".gguf" && !std::filesystem::is_directory(path);
  }

  explicit Checkpoint(const std::filesystem::path& dir) : dir_(dir) {
    namespace fs = std::filesystem;
    if (is_gguf(dir)) {
      open_gguf();
      return;
    }
    detail::require(fs::is_directory(dir), ErrorCode::bad_file, dir.string(), ": not a checkpoint folder (",
                    fs::exists(dir) ? "not a directory" : "does not exist", ") or a .gguf file");
    if (fs::exists(dir / index_file)) {
      open_sharded();
    } else {
      detail::require(fs::exists(dir / single_file), ErrorCode::bad_file, dir.string(), ": holds neither ", single_file,
                      " nor ", index_file);
      open_file(dir / single_file);
    }
  }

  /// The folder, or the GGUF file.
  const std::filesystem::path& dir() const noexcept { return dir_; }
  std::size_t file_count() const noexcept { return gguf_ ? 1 : files_.size(); }
  /// The GGUF file this checkpoint reads, or null for a safetensors folder.
  const Gguf* gguf() const& noexcept { return gguf_.get(); }
  const Gguf* gguf() const&& = delete;
  /// Reads every file's pages into memory now (MappedFile::populate).
  void populate() const {
    for (const auto& f : files_) f->populate();
    if (gguf_) gguf_->populate();
  }
  /// Copies every file into memory on huge pages (MappedFile::read_into_memory):
  /// tensor views keep their addresses.
  void read_into_memory() const {
    for (const auto& f : files_) f->read_into_memory();
    if (gguf_) gguf_->read_into_memory();
  }
  /// Throws, naming the file, if a shard was truncated or written since it
  /// was opened: its tensors are views of a map of it (one fstat per file).
  void require_unchanged() const {
    for (const auto& f : files_) f->require_unchanged();
    if (gguf_) gguf_->require_unchanged();
  }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& [name, view] : tensors_) n.push_back(name);
    return n;
  }
  // Tensor views point into the files' mappings: a temporary checkpoint has
  // none to give (`Checkpoint(dir).tensor("w")` does not compile).
  const TensorView* find(std::string_view name) const&& = delete;
  const TensorView* find(std::string_view name) const& {
    const auto it = tensors_.find(std::string(name));
    return it == tensors_.end() ? nullptr : it->second;
  }
  const TensorView& tensor(std::string_view name) const&& = delete;
  const TensorView& tensor(std::string_view name) const& {
    const TensorView* t = find(name);
    detail::require(t != nullptr, ErrorCode::bad_file, dir_.string(), ": no tensor named '", name, "'");
    return *t;
  }
  /// Bytes of tensor data over all files (what index.json calls total_size).
  std::size_t tensor_bytes() const {
    std::size_t n = 0;
    for (const auto& [name, view] : tensors_) n += view->nbytes;
    return n;
  }

 private:
  const SafeTensors& open_file(const std::filesystem::path& path) {
    files_.push_back(std::make_unique<SafeTensors>(path));
    const SafeTensors& f = *files_.back();
    for (const TensorView& t : f.tensors()) {
      const auto [it, inserted] = tensors_.emplace(t.name, &t);
      detail::require(inserted, ErrorCode::bad_file, dir_.string(), ": tensor '", t.name, "' is stored twice (in ",
                      it->second->file, " and ", t.file, ")");
    }
    return f;
  }

  /// Each tensor of the GGUF file under its transformers name: a view of
  /// its stored bytes (an expert of a stacked tensor: its slice), in its
  /// ggml type. q and k keep ggml's row order (adjacent RoPE pairs): the
  /// model's config says so (load_config), so nothing is copied.
  void open_gguf() {
    gguf_ = std::make_unique<Gguf>(dir_);
    for (const HfTensorFromGguf& t : gguf_hf_tensors(*gguf_)) {
      const GgufTensor& src = *t.source;
      const std::optional<DType> dtype = gguf::dtype_of(src.type);
      detail::require(dtype.has_value(), ErrorCode::unsupported, dir_.string(), ": tensor '", src.name, "' is ",
                      src.type_name(), ", which moe does not compute with (F32, F16, BF16, Q4_0, Q4_1, Q5_0, ",
                      "Q5_1, Q8_0, Q2_K … Q6_K)");
      TensorView v;
      v.name = t.name;
      v.dtype = *dtype;
      v.shape = t.shape;
      v.nbytes = t.slice >= 0 ? src.nbytes / std::size_t(src.ne.back()) : src.nbytes;
      v.data = src.data + (t.slice >= 0 ? std::size_t(t.slice) * v.nbytes : 0);
      v.file = dir_.string();
      gguf_views_.push_back(std::make_unique<TensorView>(std::move(v)));
      const auto [it, inserted] = tensors_.emplace(t.name, gguf_views_.back().get());
      detail::require(inserted, ErrorCode::bad_file, dir_.string(), ": two tensors are both '", t.name, "'");
    }
  }

  void open_sharded() {
    const std::filesystem::path index_path = dir_ / index_file;
    const nlohmann::json index = read_json(index_path);
    detail::require(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
                    ErrorCode::bad_file, index_path.string(), ": expected an object with a \"weight_map\" object");
    std::map<std::string, std::set<std::string>> by_shard;  // shard file -> tensors the index puts there
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      detail::require(shard.is_string(), ErrorCode::bad_file, index_path.string(), ": weight_map entry '", tensor,
                      "' is not a file name");
      const std::string file = shard.get<std::string>();
      detail::require(std::filesystem::path(file).filename() == file, ErrorCode::bad_file, index_path.string(),
                      ": weight_map entry '", tensor, "' names '", file, "', expected a file in the same folder");
      by_shard[file].insert(tensor);
    }
    detail::require(!by_shard.empty(), ErrorCode::bad_file, index_path.string(), ": weight_map is empty");
    for (const auto& [file, listed] : by_shard) {
      const SafeTensors& f = open_file(dir_ / file);
      for (const std::string& name : listed)
        detail::require(f.contains(name), ErrorCode::bad_file, index_path.string(), ": says tensor '", name, "' is in ",
                        file, ", which does not hold it");
      for (const TensorView& t : f.tensors())
        detail::require(listed.count(t.name) > 0, ErrorCode::bad_file, f.path().string(), ": holds tensor '", t.name,
                        "', which ", index_file, " does not list for this shard");
    }
  }

  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafeTensors>> files_;      // stable addresses: tensors_ points into them
  std::unique_ptr<Gguf> gguf_;                           // a GGUF checkpoint's file
  std::vector<std::unique_ptr<TensorView>> gguf_views_;  // its tensors as views (stable addresses)
  std::map<std::string, const TensorView*> tensors_;
};

}  // namespace moe::io
