#pragma once
/// \file safetensors_writer.hpp
/// Writing safetensors files. Tensors are laid out widest dtype first, so
/// each starts at a multiple of its element size from the 8-aligned data
/// section and a reader can view every one in place.
///
/// A tensor is added with its bytes, or with a function that produces them
/// when the file is written: then only one such tensor is in memory at a
/// time, however large the file (a merge streams a model this way).

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe::io {

class SafeTensorsWriter {
 public:
  /// Writes a tensor's bytes (its full size) into `dst` when the file is written.
  using Fill = std::function<void(unsigned char* dst)>;

  /// Adds a tensor; its bytes are copied now, so `data` may go away.
  void add(std::string name, DType dtype, std::vector<index_t> shape, const void* data) {
    std::vector<unsigned char> bytes(element_count(name, shape) * std::size_t(size_of(dtype)));
    if (!bytes.empty()) std::memcpy(bytes.data(), data, bytes.size());
    tensors_.push_back({std::move(name), dtype, std::move(shape), bytes.size(), std::move(bytes), {}});
  }
  /// Adds a tensor whose bytes `fill` produces at write time.
  void add(std::string name, DType dtype, std::vector<index_t> shape, Fill fill) {
    const std::size_t n = element_count(name, shape) * std::size_t(size_of(dtype));
    tensors_.push_back({std::move(name), dtype, std::move(shape), n, {}, std::move(fill)});
  }
  /// Adds a tensor whose bytes the writer takes over (no copy).
  void add(std::string name, DType dtype, std::vector<index_t> shape, std::vector<unsigned char>&& bytes) {
    const std::size_t need = element_count(name, shape) * std::size_t(size_of(dtype));
    detail::require(bytes.size() == need, ErrorCode::shape_mismatch, "SafeTensorsWriter: tensor '", name, "' needs ",
                    need, " bytes, got ", bytes.size());
    tensors_.push_back({std::move(name), dtype, std::move(shape), need, std::move(bytes), {}});
  }
  /// Bytes of tensor data added so far.
  std::size_t data_bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& t : tensors_) n += t.nbytes;
    return n;
  }
  bool empty() const noexcept { return tensors_.empty(); }
  /// Names in the order they were added.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& t : tensors_) n.push_back(t.name);
    return n;
  }
  template <class T>
  void add(std::string name, std::vector<index_t> shape, const std::vector<T>& values) {
    add(std::move(name), dtype_of_v<T>, std::move(shape), values.data());
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  void write(const std::filesystem::path& path) const {
    std::vector<const Entry*> order;
    for (const auto& t : tensors_) order.push_back(&t);
    std::stable_sort(order.begin(), order.end(),
                     [](const Entry* a, const Entry* b) { return size_of(a->dtype) > size_of(b->dtype); });
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const Entry* t : order) {
      header[t->name] = {
          {"dtype", std::string(name(t->dtype))}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->nbytes}}};
      offset += t->nbytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // 8 + N stays a multiple of 8
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    detail::require(bool(out), ErrorCode::bad_file, path.string(), ": cannot open for writing");
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    std::vector<unsigned char> produced;  // one filled tensor at a time
    for (const Entry* t : order) {
      const std::vector<unsigned char>* bytes = &t->bytes;
      if (t->fill) {
        produced.assign(t->nbytes, 0);
        t->fill(produced.data());
        bytes = &produced;
      }
      out.write(reinterpret_cast<const char*>(bytes->data()), std::streamsize(bytes->size()));
    }
    detail::require(bool(out), ErrorCode::bad_file, path.string(), ": write failed");
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<index_t> shape;
    std::size_t nbytes;
    std::vector<unsigned char> bytes;  // empty when `fill` produces them
    Fill fill;
  };
  /// Checks a new tensor's name and shape; returns its element count.
  std::size_t element_count(const std::string& name, const std::vector<index_t>& shape) const {
    detail::require(name != "__metadata__", ErrorCode::invalid_argument,
                    "SafeTensorsWriter: '__metadata__' is reserved");
    for (const auto& t : tensors_)
      detail::require(t.name != name, ErrorCode::invalid_argument, "SafeTensorsWriter: tensor '", name,
                      "' added twice");
    std::size_t n = 1;
    for (index_t d : shape) {
      detail::require(d >= 0, ErrorCode::shape_mismatch, "SafeTensorsWriter: tensor '", name,
                      "' has a negative dimension");
      n *= std::size_t(d);
    }
    return n;
  }

  std::vector<Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace moe::io
