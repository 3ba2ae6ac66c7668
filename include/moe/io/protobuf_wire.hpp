#pragma once
/// \file protobuf_wire.hpp
/// The protocol-buffer wire format, the few pieces moe needs to read and
/// write a SentencePiece tokenizer.model by hand (Debian's
/// libsentencepiece-dev ships no generated protobuf headers): a field is a
/// varint key (number << 3 | wire type) and its value; wire type 0 is a
/// varint, 1 fixed 64 bits, 2 length-delimited bytes, 5 fixed 32 bits.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "moe/core/error.hpp"

namespace moe::io {
namespace protobuf {

inline void varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += char(0x80 | (v & 0x7F));
    v >>= 7;
  }
  out += char(v);
}
inline void key(std::string& out, int field, int wire) { varint(out, std::uint64_t(field) << 3 | std::uint64_t(wire)); }
/// An int32 or enum or bool (negative int32s are sign-extended to 64 bits, as protobuf does).
inline void int_field(std::string& out, int field, std::int64_t v) {
  key(out, field, 0);
  varint(out, std::uint64_t(v));
}
inline void bytes_field(std::string& out, int field, std::string_view bytes) {
  key(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}
inline void float_field(std::string& out, int field, float v) {
  key(out, field, 5);
  char raw[4];
  std::memcpy(raw, &v, 4);  // little-endian, as the wire format
  out.append(raw, 4);
}

/// Reads protocol-buffer fields from `bytes`; every length is checked
/// against what is left (an Error naming `what` otherwise).
class Reader {
 public:
  Reader(std::string_view bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {}
  bool done() const noexcept { return at_ >= bytes_.size(); }
  std::size_t position() const noexcept { return at_; }  ///< bytes read so far
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      detail::require(at_ < bytes_.size(), ErrorCode::bad_file, what_, ": truncated varint");
      const auto byte = static_cast<unsigned char>(bytes_[at_++]);
      v |= std::uint64_t(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return v;
    }
    throw Error(ErrorCode::bad_file, detail::cat(what_, ": a varint longer than 10 bytes"));
  }
  /// The next field: its number and wire type; then read its value with one of the calls below.
  std::pair<std::uint64_t, int> key() {
    const std::uint64_t k = varint();
    return {k >> 3, int(k & 7)};
  }
  std::string_view bytes() {
    const std::uint64_t n = varint();
    detail::require(n <= bytes_.size() - at_, ErrorCode::bad_file, what_, ": a field of ", n, " bytes with ",
                    bytes_.size() - at_, " left (truncated file?)");
    const std::string_view v = bytes_.substr(at_, std::size_t(n));
    at_ += std::size_t(n);
    return v;
  }
  float fixed32() {
    detail::require(bytes_.size() - at_ >= 4, ErrorCode::bad_file, what_, ": truncated float");
    float f;
    std::memcpy(&f, bytes_.data() + at_, 4);
    at_ += 4;
    return f;
  }
  /// Skips a field of this wire type.
  void skip(int wire) {
    if (wire == 0) {
      varint();
    } else if (wire == 2) {
      bytes();
    } else if (wire == 1 || wire == 5) {
      const std::size_t n = wire == 1 ? 8 : 4;
      detail::require(bytes_.size() - at_ >= n, ErrorCode::bad_file, what_, ": truncated field");
      at_ += n;
    } else {
      throw Error(ErrorCode::bad_file, detail::cat(what_, ": unknown wire type ", wire));
    }
  }

 private:
  std::string_view bytes_;
  std::string what_;
  std::size_t at_ = 0;
};

}  // namespace protobuf

}  // namespace moe::io
