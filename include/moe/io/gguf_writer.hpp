#pragma once
/// \file gguf_writer.hpp
/// Writing GGUF files (version 3, the layout gguf.hpp reads): metadata and
/// tensor infos first, then each tensor's bytes produced when it is written,
/// so memory stays near one tensor however large the model.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "moe/core/checked.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/gguf.hpp"

namespace moe::io {

class GgufWriter {
 public:
  /// Writes a tensor's nbytes bytes into dst when the file is written.
  using Fill = std::function<void(unsigned char* dst)>;

  void add_string(const std::string& key, const std::string& v) {
    Entry& e = entry(key, gguf::ValueType::string);
    put_string(e.bytes, v);
  }
  void add_u32(const std::string& key, std::uint32_t v) { put(entry(key, gguf::ValueType::u32).bytes, v); }
  void add_i32(const std::string& key, std::int32_t v) { put(entry(key, gguf::ValueType::i32).bytes, v); }
  void add_f32(const std::string& key, float v) { put(entry(key, gguf::ValueType::f32).bytes, v); }
  void add_bool(const std::string& key, bool v) { put(entry(key, gguf::ValueType::boolean).bytes, std::uint8_t(v)); }
  void add_strings(const std::string& key, const std::vector<std::string>& v) {
    std::string& b = array(key, gguf::ValueType::string, v.size());
    for (const std::string& s : v) put_string(b, s);
  }
  void add_f32s(const std::string& key, const std::vector<float>& v) {
    std::string& b = array(key, gguf::ValueType::f32, v.size());
    for (const float x : v) put(b, x);
  }
  void add_i32s(const std::string& key, const std::vector<std::int32_t>& v) {
    std::string& b = array(key, gguf::ValueType::i32, v.size());
    for (const std::int32_t x : v) put(b, x);
  }

  /// A tensor of ggml type `type` with dimensions `ne` (fastest first).
  void add_tensor(const std::string& name, std::vector<index_t> ne, std::uint32_t type, Fill fill) {
    const std::optional<gguf::TypeTraits> t = gguf::traits(type);
    detail::require(t.has_value(), ErrorCode::invalid_argument, "GgufWriter: tensor '", name, "': unknown ggml type ",
                    type);
    detail::require(!ne.empty() && ne.size() <= gguf::max_dims && ne[0] % t->block == 0, ErrorCode::shape_mismatch,
                    "GgufWriter: tensor '", name, "' of ", t->name,
                    " needs 1 to 4 dimensions and rows of whole blocks of ", t->block);
    for (const Tensor& other : tensors_)
      detail::require(other.name != name, ErrorCode::invalid_argument, "GgufWriter: tensor '", name, "' added twice");
    const index_t n = checked::numel(ne, "GgufWriter: tensor '" + name + "'", ErrorCode::invalid_argument);
    tensors_.push_back({name, std::move(ne), type, std::size_t(n / t->block * t->bytes), std::move(fill)});
  }

  /// Writes the file: header, then the tensors in the order they were added,
  /// each aligned to 32 bytes.
  void write(const std::filesystem::path& path) const {
    std::string header = "GGUF";
    put(header, std::uint32_t(3));
    put(header, std::uint64_t(tensors_.size()));
    put(header, std::uint64_t(entries_.size()));
    for (const Entry& e : entries_) {
      put_string(header, e.key);
      put(header, std::uint32_t(e.type));
      header += e.bytes;
    }
    std::uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
      put_string(header, t.name);
      put(header, std::uint32_t(t.ne.size()));
      for (const index_t d : t.ne) put(header, std::uint64_t(d));
      put(header, t.type);
      put(header, offset);
      offset = align(offset + t.nbytes);
    }
    header.resize(std::size_t(align(header.size())), '\0');
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    detail::require(bool(out), ErrorCode::bad_file, path.string(), ": cannot open for writing");
    out.write(header.data(), std::streamsize(header.size()));
    std::vector<unsigned char> buffer;
    for (const Tensor& t : tensors_) {
      buffer.assign(std::size_t(align(t.nbytes)), 0);
      t.fill(buffer.data());
      out.write(reinterpret_cast<const char*>(buffer.data()), std::streamsize(buffer.size()));
    }
    detail::require(bool(out.flush()), ErrorCode::bad_file, path.string(), ": write failed (disk full?)");
  }

 private:
  static constexpr std::uint64_t alignment = 32;
  static std::uint64_t align(std::uint64_t n) noexcept { return (n + alignment - 1) / alignment * alignment; }

  struct Entry {
    std::string key;
    gguf::ValueType type;
    std::string bytes;  ///< the value as the file holds it
  };
  struct Tensor {
    std::string name;
    std::vector<index_t> ne;
    std::uint32_t type;
    std::size_t nbytes;
    Fill fill;
  };

  template <class T>
  static void put(std::string& b, T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof v);  // little-endian, as GGUF is
    b.append(raw, sizeof v);
  }
  static void put_string(std::string& b, const std::string& s) {
    put(b, std::uint64_t(s.size()));
    b += s;
  }
  Entry& entry(const std::string& key, gguf::ValueType type) {
    for (const Entry& e : entries_)
      detail::require(e.key != key, ErrorCode::invalid_argument, "GgufWriter: metadata '", key, "' added twice");
    entries_.push_back({key, type, {}});
    return entries_.back();
  }
  std::string& array(const std::string& key, gguf::ValueType element, std::size_t count) {
    Entry& e = entry(key, gguf::ValueType::array);
    put(e.bytes, std::uint32_t(element));
    put(e.bytes, std::uint64_t(count));
    return e.bytes;
  }

  std::vector<Entry> entries_;
  std::vector<Tensor> tensors_;
};

}  // namespace moe::io
