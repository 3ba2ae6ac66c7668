#pragma once
/// \file safetensors.hpp
/// Reading safetensors files: mapped, validated in full before anything is
/// handed out, viewed in place without copying.
///
/// Layout: u64 little-endian header length N, N bytes of JSON
/// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
/// then the data section. A valid file's tensors tile the data section
/// exactly: no byte outside the file, no overlap, no hole. Every violation is
/// a moe::Error(bad_file) naming the file and the tensor.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/checked.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"
#include "moe/io/mapped_file.hpp"

namespace moe::io {

/// The dtype named by a safetensors code, or nullopt for an unknown one.
inline std::optional<DType> parse_dtype(std::string_view code) {
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::BOOL})
    if (name(d) == code) return d;
  return std::nullopt;
}

inline std::string shape_string(const std::vector<index_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// One tensor of a file: its description and a view of its bytes.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<index_t> shape;
  const unsigned char* data = nullptr;  ///< into the mapping (valid while the file is open)
  std::size_t nbytes = 0;
  std::string file;  ///< for error messages

  /// Elements: 0 when any dimension is 0; an overflowing product is an error
  /// (a tensor from SafeTensors was checked on open and never overflows).
  index_t numel() const {
    const auto fail = [&] {  // names the negative dimension or the overflow
      return checked::numel(shape, detail::cat(file, ": tensor '", name, "' of shape ", shape_string(shape)));
    };
    for (const index_t d : shape) {
      if (d < 0) return fail();
      if (d == 0) return 0;
    }
    index_t n = 1;
    for (const index_t d : shape)
      if (__builtin_mul_overflow(n, d, &n)) return fail();
    return n;
  }
  index_t dim(std::size_t i) const noexcept { return shape[i]; }

  /// The elements as T, in place. Checks the dtype and alignment.
  template <class T>
  std::span<const T> as() const {
    expect_dtype(dtype_of_v<T>);
    detail::require(reinterpret_cast<std::uintptr_t>(data) % alignof(T) == 0, ErrorCode::bad_file, file, ": tensor '",
                    name, "' is not aligned for ", sizeof(T), "-byte elements; use to_vector()");
    return {reinterpret_cast<const T*>(data), std::size_t(numel())};
  }
  /// The elements as T, copied (works whatever the alignment).
  template <class T>
  std::vector<T> to_vector() const {
    expect_dtype(dtype_of_v<T>);
    std::vector<T> v(static_cast<std::size_t>(numel()));
    if (nbytes) std::memcpy(v.data(), data, nbytes);
    return v;
  }
  /// Views a 2-D weight tensor (or a [rows, cols] slice of a 3-D stack).
  WeightMatrix matrix(std::optional<index_t> slice = std::nullopt) const {
    detail::require(is_weight_dtype(dtype), ErrorCode::dtype_mismatch, file, ": tensor '", name, "' has dtype ",
                    moe::name(dtype), ", expected a weight dtype (F32, BF16, F16)");
    if (!slice) {
      detail::require(shape.size() == 2, ErrorCode::shape_mismatch, file, ": tensor '", name, "' has shape ",
                      shape_string(shape), ", expected a matrix");
      return {data, dtype, shape[0], shape[1]};
    }
    detail::require(shape.size() == 3 && *slice >= 0 && *slice < shape[0], ErrorCode::shape_mismatch, file,
                    ": tensor '", name, "' has shape ", shape_string(shape), ", cannot take slice ", *slice);
    const std::size_t stride = std::size_t(shape[1] * shape[2] * size_of(dtype));
    return {data + std::size_t(*slice) * stride, dtype, shape[1], shape[2]};
  }
  /// Checks the exact shape, naming the tensor and file.
  void expect_shape(const std::vector<index_t>& expected) const {
    detail::require(shape == expected, ErrorCode::shape_mismatch, file, ": tensor '", name, "' has shape ",
                    shape_string(shape), ", expected ", shape_string(expected));
  }
  void expect_dtype(DType expected) const {
    detail::require(dtype == expected, ErrorCode::dtype_mismatch, file, ": tensor '", name, "' has dtype ",
                    moe::name(dtype), ", expected ", moe::name(expected));
  }
};

/// An open, validated safetensors file.
class SafeTensors {
 public:
  explicit SafeTensors(const std::filesystem::path& path) : file_(path) { parse(); }

  const std::filesystem::path& path() const noexcept { return file_.path(); }
  /// Throws if the file changed on disk since it was opened (MappedFile).
  void require_unchanged() const { file_.require_unchanged(); }
  /// Reads the whole file into memory now (MappedFile::populate).
  void populate() const noexcept { file_.populate(); }
  /// Copies the file into memory on huge pages, views unchanged (MappedFile::read_into_memory).
  void read_into_memory() const { file_.read_into_memory(); }
  // Tensor views point into the file's mapping: a temporary file has none
  // to give (`SafeTensors(path).tensor("w")` does not compile).
  const std::vector<TensorView>& tensors() const& noexcept { return tensors_; }
  const std::vector<TensorView>& tensors() const&& = delete;
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const TensorView* find(std::string_view name) const&& = delete;
  const TensorView* find(std::string_view name) const& {
    const auto it = std::find_if(tensors_.begin(), tensors_.end(), [&](const TensorView& t) { return t.name == name; });
    return it == tensors_.end() ? nullptr : &*it;
  }
  const TensorView& tensor(std::string_view name) const&& = delete;
  const TensorView& tensor(std::string_view name) const& {
    const TensorView* t = find(name);
    detail::require(t != nullptr, ErrorCode::bad_file, path().string(), ": no tensor named '", name, "'");
    return *t;
  }
  /// A metadata value, or `fallback` when the key is absent.
  std::string meta(const std::string& key, const std::string& fallback = "") const {
    const auto it = metadata_.find(key);
    return it == metadata_.end() ? fallback : it->second;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::bad_file, detail::cat(path().string(), ": ", what));
  }

  void parse() {
    const std::size_t size = file_.size();
    if (size < 8) fail(detail::cat("file has ", size, " bytes, too short for the 8-byte header length"));
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | file_.data()[i];  // little-endian on any host
    if (n > size - 8) fail(detail::cat("header length ", n, " exceeds the ", size - 8, " bytes after it"));
    const char* header = reinterpret_cast<const char*>(file_.data() + 8);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(header, header + n);
    } catch (const nlohmann::json::exception& e) {
      fail(detail::cat("header is not valid JSON (", e.what(), ")"));
    }
    if (!j.is_object()) fail("header is not a JSON object");
    const unsigned char* data = file_.data() + 8 + n;
    const std::size_t data_size = size - 8 - std::size_t(n);

    for (const auto& [key, value] : j.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) fail("__metadata__ is not an object");
        for (const auto& [k, v] : value.items()) {
          if (!v.is_string()) fail(detail::cat("__metadata__ value of '", k, "' is not a string"));
          metadata_[k] = v.get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_tensor(key, value, data, data_size));
    }
    check_tiling(data, data_size);
  }

  TensorView parse_tensor(const std::string& key, const nlohmann::json& v, const unsigned char* data,
                          std::size_t data_size) const {
    const auto where = [&](const std::string& what) { return detail::cat("tensor '", key, "': ", what); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(where("entry needs dtype, shape and data_offsets"));
    if (!v["dtype"].is_string()) fail(where("dtype is not a string"));
    const std::string code = v["dtype"].get<std::string>();
    const std::optional<DType> dtype = parse_dtype(code);
    if (!dtype) fail(where(detail::cat("unknown dtype ", code)));
    TensorView t;
    t.name = key;
    t.dtype = *dtype;
    t.file = path().string();
    if (!v["shape"].is_array()) fail(where("shape is not an array"));
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(where("shape has an entry that is not a non-negative integer"));
      const std::uint64_t n = d.get<std::uint64_t>();
      if (n > std::uint64_t(std::numeric_limits<index_t>::max()))
        fail(where(detail::cat("shape has a dimension ", n, ", over 2^63 - 1")));
      t.shape.push_back(index_t(n));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(where("data_offsets is not a pair of non-negative integers"));
    const std::uint64_t begin = off[0].get<std::uint64_t>(), end = off[1].get<std::uint64_t>();
    if (begin > end) fail(where(detail::cat("data_offsets [", begin, ", ", end, "] run backwards")));
    // Checked: a product that wraps at 2^64 could match the bytes the file holds.
    const std::string what =
        detail::cat(path().string(), ": tensor '", key, "': shape ", shape_string(t.shape), " of ", code);
    const std::uint64_t need =
        checked::mul_bytes(std::uint64_t(checked::numel(t.shape, what)), std::uint64_t(size_of(t.dtype)), what);
    if (end - begin != need)
      fail(where(detail::cat("shape ", shape_string(t.shape), " of ", code, " needs ", need, " bytes, offsets span ",
                             end - begin)));
    if (end > data_size)
      fail(where(
          detail::cat("data ends at byte ", end, " but the data section has ", data_size, " bytes (truncated file?)")));
    t.data = data + begin;
    t.nbytes = std::size_t(need);
    return t;
  }

  /// The tensors must tile the data section: sorted by offset, each starts
  /// where the previous ended, the last ends at the end of the file.
  void check_tiling(const unsigned char* data, std::size_t data_size) const {
    std::vector<const TensorView*> order;
    for (const auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) {
      return a->data != b->data ? a->data < b->data : a->nbytes < b->nbytes;
    });
    std::size_t covered = 0;
    const TensorView* last = nullptr;
    for (const TensorView* t : order) {
      const std::size_t begin = std::size_t(t->data - data);
      if (begin < covered && t->nbytes > 0)
        fail(
            detail::cat("tensors '", last->name, "' and '", t->name, "' overlap (bytes ", begin, " to ", covered, ")"));
      if (begin > covered)
        fail(detail::cat("bytes ", covered, " to ", begin, " of the data section belong to no tensor (before '",
                         t->name, "')"));
      covered = std::max(covered, begin + t->nbytes);
      if (t->nbytes > 0) last = t;
    }
    if (covered != data_size)
      fail(detail::cat("data section has ", data_size, " bytes but its tensors cover ", covered));
  }

  MappedFile file_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace moe::io
