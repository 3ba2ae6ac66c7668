#pragma once
/// \file gguf.hpp
/// Reading GGUF files (llama.cpp's format, versions 2 and 3): mapped,
/// validated in full before anything is handed out, tensors viewed in place.
///
/// Layout, every number little-endian:
///
///   "GGUF"  u32 version  u64 tensor_count  u64 metadata_count
///   metadata_count × (string key, u32 value type, value)
///   tensor_count  × (string name, u32 n_dims, n_dims × u64 ne, u32 ggml type, u64 offset)
///   padding to `general.alignment` (default 32), then the data section
///
/// where a string is u64 length + bytes (no terminator) and an array value is
/// u32 element type + u64 count + the elements. A tensor's `ne` lists its
/// dimensions fastest-varying first (ne[0] is the length of a row: a
/// PyTorch weight [out, in] is stored as ne = [in, out]); its bytes are
/// ne[0] / block_size blocks of block_bytes per row (gguf::traits), at
/// `offset` from the start of the data section, which is a multiple of the
/// alignment.
///
/// Every count, length, offset and size is checked against the bytes the
/// file holds before it is used, so a truncated or corrupted file is a
/// moe::Error(bad_file) naming the file and the field, never a read past the
/// end or an allocation of an absurd size.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/checked.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/mapped_file.hpp"

namespace moe::io {
namespace gguf {

/// The type of a metadata value (GGUF's numbering).
enum class ValueType : std::uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

/// The name GGUF's documentation gives a value type ("uint32", …), or "unknown".
inline std::string_view name(ValueType t) noexcept {
  constexpr std::string_view names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                        "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const auto i = std::uint32_t(t);
  return i < std::size(names) ? names[i] : "unknown";
}

/// Bytes of one value of a fixed-size type; 0 for string and array.
inline std::size_t fixed_size(ValueType t) noexcept {
  switch (t) {
    case ValueType::u8:
    case ValueType::i8:
    case ValueType::boolean:
      return 1;
    case ValueType::u16:
    case ValueType::i16:
      return 2;
    case ValueType::u32:
    case ValueType::i32:
    case ValueType::f32:
      return 4;
    case ValueType::u64:
    case ValueType::i64:
    case ValueType::f64:
      return 8;
    default:
      return 0;
  }
}

/// A ggml tensor type: its name, and its storage in blocks of `block`
/// elements taking `bytes` bytes each (F32: 1 and 4; Q4_K: 256 and 144).
struct TypeTraits {
  std::string_view name;
  index_t block = 0;
  index_t bytes = 0;
};

/// The traits of the ggml type a file stores as `code`, or nullopt for a
/// code this table does not know (a newer ggml's type, or garbage).
inline std::optional<TypeTraits> traits(std::uint32_t code) noexcept {
  // ggml's numbering (ggml.h, enum ggml_type); gaps are types ggml removed.
  switch (code) {
    case 0:
      return TypeTraits{"F32", 1, 4};
    case 1:
      return TypeTraits{"F16", 1, 2};
    case 2:
      return TypeTraits{"Q4_0", 32, 18};
    case 3:
      return TypeTraits{"Q4_1", 32, 20};
    case 6:
      return TypeTraits{"Q5_0", 32, 22};
    case 7:
      return TypeTraits{"Q5_1", 32, 24};
    case 8:
      return TypeTraits{"Q8_0", 32, 34};
    case 9:
      return TypeTraits{"Q8_1", 32, 40};
    case 10:
      return TypeTraits{"Q2_K", 256, 84};
    case 11:
      return TypeTraits{"Q3_K", 256, 110};
    case 12:
      return TypeTraits{"Q4_K", 256, 144};
    case 13:
      return TypeTraits{"Q5_K", 256, 176};
    case 14:
      return TypeTraits{"Q6_K", 256, 210};
    case 15:
      return TypeTraits{"Q8_K", 256, 292};
    case 16:
      return TypeTraits{"IQ2_XXS", 256, 66};
    case 17:
      return TypeTraits{"IQ2_XS", 256, 74};
    case 18:
      return TypeTraits{"IQ3_XXS", 256, 98};
    case 19:
      return TypeTraits{"IQ1_S", 256, 50};
    case 20:
      return TypeTraits{"IQ4_NL", 32, 18};
    case 21:
      return TypeTraits{"IQ3_S", 256, 110};
    case 22:
      return TypeTraits{"IQ2_S", 256, 82};
    case 23:
      return TypeTraits{"IQ4_XS", 256, 136};
    case 24:
      return TypeTraits{"I8", 1, 1};
    case 25:
      return TypeTraits{"I16", 1, 2};
    case 26:
      return TypeTraits{"I32", 1, 4};
    case 27:
      return TypeTraits{"I64", 1, 8};
    case 28:
      return TypeTraits{"F64", 1, 8};
    case 29:
      return TypeTraits{"IQ1_M", 256, 56};
    case 30:
      return TypeTraits{"BF16", 1, 2};
    case 34:
      return TypeTraits{"TQ1_0", 256, 54};
    case 35:
      return TypeTraits{"TQ2_0", 256, 66};
    case 39:
      return TypeTraits{"MXFP4", 32, 17};
    default:
      return std::nullopt;
  }
}

/// The moe::DType of a ggml type code, for the types moe computes with in
/// their stored form (the float types and the block formats of
/// moe/quant/block_formats.hpp); nullopt for the others.
inline std::optional<DType> dtype_of(std::uint32_t code) noexcept {
  switch (code) {
    case 0:
      return DType::F32;
    case 1:
      return DType::F16;
    case 30:
      return DType::BF16;
    case 2:
      return DType::Q4_0;
    case 3:
      return DType::Q4_1;
    case 6:
      return DType::Q5_0;
    case 7:
      return DType::Q5_1;
    case 8:
      return DType::Q8_0;
    case 10:
      return DType::Q2_K;
    case 11:
      return DType::Q3_K;
    case 12:
      return DType::Q4_K;
    case 13:
      return DType::Q5_K;
    case 14:
      return DType::Q6_K;
    default:
      return std::nullopt;
  }
}

/// Most dimensions a ggml tensor has (GGML_MAX_DIMS).
inline constexpr std::uint32_t max_dims = 4;

}  // namespace gguf

/// One metadata value: a scalar, a string, or an array of either (arrays of
/// arrays are refused on open, as llama.cpp refuses them).
struct GgufValue {
  gguf::ValueType type = gguf::ValueType::u8;
  gguf::ValueType element = gguf::ValueType::u8;  ///< an array's element type
  std::uint64_t count = 0;                        ///< an array's length
  std::uint64_t u = 0;                            ///< unsigned integers and bool
  std::int64_t i = 0;                             ///< signed integers
  double f = 0;                                   ///< float32, float64
  std::string s;                                  ///< string
  std::vector<std::string> strings;               ///< array of strings
  const unsigned char* items = nullptr;           ///< array of numbers: its elements, in the mapping

  bool is_array() const noexcept { return type == gguf::ValueType::array; }
};

/// One tensor of a GGUF file: its description and a view of its bytes.
struct GgufTensor {
  std::string name;
  std::uint32_t type = 0;               ///< ggml type code (gguf::traits)
  std::vector<index_t> ne;              ///< dimensions, fastest-varying first
  std::uint64_t offset = 0;             ///< from the start of the data section
  const unsigned char* data = nullptr;  ///< into the mapping (valid while the file is open)
  std::size_t nbytes = 0;

  std::string_view type_name() const noexcept { return gguf::traits(type)->name; }
  /// Elements (checked on open: never overflows).
  index_t numel() const noexcept {
    index_t n = 1;
    for (const index_t d : ne) n *= d;
    return n;
  }
  /// The row-major shape PyTorch and safetensors use: ne reversed.
  std::vector<index_t> shape() const { return {ne.rbegin(), ne.rend()}; }
};

/// An open, validated GGUF file.
class Gguf {
 public:
  explicit Gguf(const std::filesystem::path& path) : file_(path) { parse(); }

  const std::filesystem::path& path() const noexcept { return file_.path(); }
  /// Throws if the file changed on disk since it was opened (MappedFile).
  void require_unchanged() const { file_.require_unchanged(); }
  /// Reads the whole file into memory now (MappedFile::populate).
  void populate() const noexcept { file_.populate(); }
  /// Copies the file into memory on huge pages, views unchanged (MappedFile::read_into_memory).
  void read_into_memory() const { file_.read_into_memory(); }
  std::uint32_t version() const noexcept { return version_; }
  std::uint64_t alignment() const noexcept { return alignment_; }

  const std::map<std::string, GgufValue, std::less<>>& metadata() const noexcept { return metadata_; }
  bool contains(std::string_view key) const { return metadata_.find(key) != metadata_.end(); }
  const GgufValue* find(std::string_view key) const {
    const auto it = metadata_.find(key);
    return it == metadata_.end() ? nullptr : &it->second;
  }

  /// A string value; an Error naming the key if it is absent or not a string.
  std::string get_string(std::string_view key) const {
    const GgufValue& v = value(key, gguf::ValueType::string);
    return v.s;
  }
  std::optional<std::string> get_string_or(std::string_view key) const {
    if (!contains(key)) return std::nullopt;
    return get_string(key);
  }
  /// An integer value of any integer type; bool is not an integer.
  std::int64_t get_int(std::string_view key) const {
    const GgufValue& v = value(key);
    switch (v.type) {
      case gguf::ValueType::u8:
      case gguf::ValueType::u16:
      case gguf::ValueType::u32:
      case gguf::ValueType::u64:
        if (v.u > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
          fail(detail::cat("metadata '", key, "' is ", v.u, ", over 2^63 - 1"));
        return std::int64_t(v.u);
      case gguf::ValueType::i8:
      case gguf::ValueType::i16:
      case gguf::ValueType::i32:
      case gguf::ValueType::i64:
        return v.i;
      default:
        fail(detail::cat("metadata '", key, "' is a ", gguf::name(v.type), ", expected an integer"));
    }
  }
  std::optional<std::int64_t> get_int_or(std::string_view key) const {
    if (!contains(key)) return std::nullopt;
    return get_int(key);
  }
  /// A float32 or float64 value (integers are accepted too: writers differ).
  double get_float(std::string_view key) const {
    const GgufValue& v = value(key);
    if (v.type == gguf::ValueType::f32 || v.type == gguf::ValueType::f64) return v.f;
    return double(get_int(key));
  }
  std::optional<double> get_float_or(std::string_view key) const {
    if (!contains(key)) return std::nullopt;
    return get_float(key);
  }
  bool get_bool(std::string_view key) const { return value(key, gguf::ValueType::boolean).u != 0; }

  /// An array of strings (a tokenizer's tokens or merges).
  const std::vector<std::string>& get_strings(std::string_view key) const {
    const GgufValue& v = array(key);
    if (v.element != gguf::ValueType::string)
      fail(detail::cat("metadata '", key, "' is an array of ", gguf::name(v.element), ", expected strings"));
    return v.strings;
  }
  /// An array of numbers of any numeric type, as doubles (scores, token types).
  std::vector<double> get_numbers(std::string_view key) const {
    const GgufValue& v = array(key);
    const std::size_t size = gguf::fixed_size(v.element);
    if (size == 0)
      fail(detail::cat("metadata '", key, "' is an array of ", gguf::name(v.element), ", expected numbers"));
    std::vector<double> out(std::size_t(v.count));
    for (std::size_t k = 0; k < out.size(); ++k) out[k] = number(v.element, v.items + k * size);
    return out;
  }

  // Tensor views point into the file's mapping: a temporary file has none to
  // give (`Gguf(path).tensor("w")` does not compile).
  const std::vector<GgufTensor>& tensors() const& noexcept { return tensors_; }
  const std::vector<GgufTensor>& tensors() const&& = delete;
  const GgufTensor* find_tensor(std::string_view name) const&& = delete;
  const GgufTensor* find_tensor(std::string_view name) const& {
    const auto it = std::find_if(tensors_.begin(), tensors_.end(), [&](const GgufTensor& t) { return t.name == name; });
    return it == tensors_.end() ? nullptr : &*it;
  }
  const GgufTensor& tensor(std::string_view name) const&& = delete;
  const GgufTensor& tensor(std::string_view name) const& {
    const GgufTensor* t = find_tensor(name);
    if (t == nullptr) fail(detail::cat("no tensor named '", name, "'"));
    return *t;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::bad_file, detail::cat(path().string(), ": ", what));
  }

  const GgufValue& value(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) fail(detail::cat("no metadata key '", key, "'"));
    return *v;
  }
  const GgufValue& value(std::string_view key, gguf::ValueType want) const {
    const GgufValue& v = value(key);
    if (v.type != want)
      fail(detail::cat("metadata '", key, "' is a ", gguf::name(v.type), ", expected a ", gguf::name(want)));
    return v;
  }
  const GgufValue& array(std::string_view key) const {
    const GgufValue& v = value(key);
    if (!v.is_array()) fail(detail::cat("metadata '", key, "' is a ", gguf::name(v.type), ", expected an array"));
    return v;
  }

  template <class T>
  static T load(const unsigned char* p) noexcept {
    T v;
    std::memcpy(&v, p, sizeof v);  // the file is little-endian, as every host moe builds for
    return v;
  }
  static double number(gguf::ValueType t, const unsigned char* p) noexcept {
    switch (t) {
      case gguf::ValueType::u8:
        return double(load<std::uint8_t>(p));
      case gguf::ValueType::i8:
        return double(load<std::int8_t>(p));
      case gguf::ValueType::u16:
        return double(load<std::uint16_t>(p));
      case gguf::ValueType::i16:
        return double(load<std::int16_t>(p));
      case gguf::ValueType::u32:
        return double(load<std::uint32_t>(p));
      case gguf::ValueType::i32:
        return double(load<std::int32_t>(p));
      case gguf::ValueType::f32:
        return double(load<float>(p));
      case gguf::ValueType::boolean:
        return double(load<std::uint8_t>(p) != 0);
      case gguf::ValueType::u64:
        return double(load<std::uint64_t>(p));
      case gguf::ValueType::i64:
        return double(load<std::int64_t>(p));
      case gguf::ValueType::f64:
        return load<double>(p);
      default:
        return 0;
    }
  }

  /// A cursor over the header that refuses to read past the end of the file.
  struct Reader {
    const Gguf& g;
    const unsigned char* base;
    std::size_t size, pos = 0;

    std::size_t left() const noexcept { return size - pos; }
    /// n more bytes, or an Error naming `what` (the field being read).
    const unsigned char* take(std::uint64_t n, const std::string& what) {
      if (n > left())
        g.fail(detail::cat(what, " needs ", n, " bytes at offset ", pos, " but the file has ", left(),
                           " left (truncated file?)"));
      const unsigned char* p = base + pos;
      pos += std::size_t(n);
      return p;
    }
    template <class T>
    T read(const std::string& what) {
      return load<T>(take(sizeof(T), what));
    }
    std::string string(const std::string& what) {
      const std::uint64_t n = read<std::uint64_t>(what + " length");
      if (n > left())
        g.fail(detail::cat(what, " has length ", n, " at offset ", pos - 8, " but the file has ", left(),
                           " bytes left (truncated or corrupt file?)"));
      const unsigned char* p = take(n, what);
      return {reinterpret_cast<const char*>(p), std::size_t(n)};
    }
  };

  void parse() {
    Reader r{*this, file_.data(), file_.size()};
    const unsigned char* magic = r.take(4, "the magic 'GGUF'");
    if (std::memcmp(magic, "GGUF", 4) != 0) {
      std::string seen;
      for (int k = 0; k < 4; ++k) seen += (magic[k] >= 32 && magic[k] < 127) ? char(magic[k]) : '?';
      fail(detail::cat("not a GGUF file: starts with '", seen, "', expected 'GGUF'"));
    }
    version_ = r.read<std::uint32_t>("the version");
    if (version_ == 1)
      fail("GGUF version 1 (32-bit counts, 2023) is not supported; re-save the file with a current llama.cpp");
    if (version_ != 2 && version_ != 3) {
      if ((version_ & 0xFFFFu) == 0 && version_ != 0)
        fail(detail::cat("version field reads ", version_, ": a big-endian GGUF file, which is not supported"));
      fail(detail::cat("GGUF version ", version_, " is not supported (expected 2 or 3)"));
    }
    const std::uint64_t tensor_count = r.read<std::uint64_t>("the tensor count");
    const std::uint64_t kv_count = r.read<std::uint64_t>("the metadata count");
    // Each metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes,
    // each tensor info 8 + 4 + 4 + 8: a count past what the file could hold
    // is corrupt, and is refused before anything is allocated for it.
    if (kv_count > r.left() / 13)
      fail(detail::cat("metadata count ", kv_count, " cannot fit in the ", r.left(), " bytes after it"));
    for (std::uint64_t k = 0; k < kv_count; ++k) {
      std::string key = r.string(detail::cat("metadata key ", k));
      const std::string what = detail::cat("metadata '", key, "'");
      GgufValue v = read_value(r, r.read<std::uint32_t>(what + " type"), what, false);
      if (!metadata_.emplace(std::move(key), std::move(v)).second) fail(what + " appears twice");
    }
    if (const GgufValue* a = find("general.alignment")) {
      if (a->type != gguf::ValueType::u32)
        fail(detail::cat("metadata 'general.alignment' is a ", gguf::name(a->type), ", expected a uint32"));
      if (a->u == 0 || (a->u & (a->u - 1)) != 0)
        fail(detail::cat("metadata 'general.alignment' is ", a->u, ", expected a power of two"));
      alignment_ = a->u;
    }
    if (tensor_count > r.left() / 24)
      fail(detail::cat("tensor count ", tensor_count, " cannot fit in the ", r.left(), " bytes after the metadata"));
    tensors_.reserve(std::size_t(tensor_count));
    for (std::uint64_t k = 0; k < tensor_count; ++k) tensors_.push_back(read_tensor_info(r, k));
    // The data section starts at the next multiple of the alignment.
    const std::size_t start = std::size_t((r.pos + alignment_ - 1) / alignment_ * alignment_);
    if (start > file_.size() && !tensors_.empty())
      fail(detail::cat("the data section would start at byte ", start, " past the end of the file (", file_.size(),
                       " bytes)"));
    const std::size_t data_size = start <= file_.size() ? file_.size() - start : 0;
    for (GgufTensor& t : tensors_) {
      const std::string what = detail::cat("tensor '", t.name, "'");
      if (t.offset % alignment_ != 0)
        fail(detail::cat(what, " starts at offset ", t.offset, ", not a multiple of the alignment ", alignment_));
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
        fail(detail::cat(what, " (", t.type_name(), ", ", t.nbytes, " bytes at offset ", t.offset,
                         ") ends past the data section's ", data_size, " bytes (truncated file?)"));
      t.data = file_.data() + start + t.offset;
    }
    check_overlaps();
  }

  GgufValue read_value(Reader& r, std::uint32_t code, const std::string& what, bool in_array) {
    GgufValue v;
    v.type = gguf::ValueType(code);
    switch (v.type) {
      case gguf::ValueType::u8:
        v.u = r.read<std::uint8_t>(what);
        break;
      case gguf::ValueType::u16:
        v.u = r.read<std::uint16_t>(what);
        break;
      case gguf::ValueType::u32:
        v.u = r.read<std::uint32_t>(what);
        break;
      case gguf::ValueType::u64:
        v.u = r.read<std::uint64_t>(what);
        break;
      case gguf::ValueType::i8:
        v.i = r.read<std::int8_t>(what);
        break;
      case gguf::ValueType::i16:
        v.i = r.read<std::int16_t>(what);
        break;
      case gguf::ValueType::i32:
        v.i = r.read<std::int32_t>(what);
        break;
      case gguf::ValueType::i64:
        v.i = r.read<std::int64_t>(what);
        break;
      case gguf::ValueType::f32:
        v.f = r.read<float>(what);
        break;
      case gguf::ValueType::f64:
        v.f = r.read<double>(what);
        break;
      case gguf::ValueType::boolean: {
        const std::uint8_t b = r.read<std::uint8_t>(what);
        if (b > 1) fail(detail::cat(what, " is a bool holding ", int(b), ", expected 0 or 1"));
        v.u = b;
        break;
      }
      case gguf::ValueType::string:
        v.s = r.string(what);
        break;
      case gguf::ValueType::array: {
        if (in_array) fail(what + " is an array of arrays, which GGUF readers (llama.cpp's too) do not support");
        const std::uint32_t element = r.read<std::uint32_t>(what + " element type");
        v.element = gguf::ValueType(element);
        v.count = r.read<std::uint64_t>(what + " length");
        const std::size_t size = gguf::fixed_size(v.element);
        if (v.element == gguf::ValueType::string) {
          if (v.count > r.left() / 8)  // every string takes at least its 8-byte length
            fail(detail::cat(what, " claims ", v.count, " strings but ", r.left(), " bytes are left"));
          v.strings.reserve(std::size_t(v.count));
          for (std::uint64_t k = 0; k < v.count; ++k) v.strings.push_back(r.string(detail::cat(what, "[", k, "]")));
        } else if (size > 0) {
          v.items = r.take(checked::mul_bytes(v.count, size, what),
                           detail::cat(what, " (", v.count, " ", gguf::name(v.element), ")"));
        } else if (v.element == gguf::ValueType::array) {
          fail(what + " is an array of arrays, which GGUF readers (llama.cpp's too) do not support");
        } else {
          fail(detail::cat(what, " has elements of unknown type ", element));
        }
        break;
      }
      default:
        fail(detail::cat(what, " has unknown value type ", code));
    }
    return v;
  }

  GgufTensor read_tensor_info(Reader& r, std::uint64_t k) {
    GgufTensor t;
    t.name = r.string(detail::cat("tensor ", k, "'s name"));
    const std::string what = detail::cat("tensor '", t.name, "'");
    if (find_tensor(t.name) != nullptr) fail(what + " appears twice");
    const std::uint32_t dims = r.read<std::uint32_t>(what + " dimension count");
    if (dims == 0 || dims > gguf::max_dims)
      fail(detail::cat(what, " has ", dims, " dimensions, expected 1 to ", gguf::max_dims));
    for (std::uint32_t d = 0; d < dims; ++d) {
      const std::uint64_t n = r.read<std::uint64_t>(detail::cat(what, " dimension ", d));
      if (n > std::uint64_t(std::numeric_limits<index_t>::max()))
        fail(detail::cat(what, " has dimension ", d, " = ", n, ", over 2^63 - 1"));
      t.ne.push_back(index_t(n));
    }
    t.type = r.read<std::uint32_t>(what + " type");
    const std::optional<gguf::TypeTraits> tt = gguf::traits(t.type);
    if (!tt) fail(detail::cat(what, " has ggml type ", t.type, ", which this reader does not know"));
    t.offset = r.read<std::uint64_t>(what + " offset");
    const std::string shape = detail::cat(what, " of ", tt->name, " with ne[0] = ", t.ne[0]);
    if (t.ne[0] % tt->block != 0) fail(detail::cat(shape, ": rows must hold whole blocks of ", tt->block, " elements"));
    const index_t n = checked::numel(t.ne, path().string() + ": " + what);
    t.nbytes = std::size_t(
        checked::mul_bytes(std::uint64_t(n / tt->block), std::uint64_t(tt->bytes), path().string() + ": " + what));
    return t;
  }

  /// No two tensors may share bytes (gaps are allowed: alignment padding).
  void check_overlaps() const {
    std::vector<const GgufTensor*> order;
    for (const GgufTensor& t : tensors_)
      if (t.nbytes > 0) order.push_back(&t);
    std::sort(order.begin(), order.end(),
              [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
    for (std::size_t k = 1; k < order.size(); ++k)
      if (order[k]->offset < order[k - 1]->offset + order[k - 1]->nbytes)
        fail(detail::cat("tensors '", order[k - 1]->name, "' and '", order[k]->name, "' overlap (bytes ",
                         order[k]->offset, " to ", order[k - 1]->offset + order[k - 1]->nbytes,
                         " of the data section)"));
  }

  MappedFile file_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensor> tensors_;
};

}  // namespace moe::io
