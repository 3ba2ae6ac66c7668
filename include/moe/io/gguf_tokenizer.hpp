#pragma once
/// \file gguf_tokenizer.hpp
/// The tokenizer a GGUF file carries, as the file transformers and
/// SentencePiece read. A GGUF of tokenizer model `llama` (Llama, Mistral,
/// Mixtral: SentencePiece BPE) stores the pieces, their scores and types;
/// gguf_sentencepiece_model() writes them back as a SentencePiece
/// tokenizer.model (a serialized ModelProto) with the settings those models
/// were trained with: BPE, byte fallback when the vocabulary has byte
/// pieces, no normalisation (`identity`), whitespace kept, the dummy prefix
/// space as `tokenizer.ggml.add_space_prefix` says (default on).
///
/// The protobuf is written by hand (a few fields of sentencepiece_model.proto;
/// Debian's libsentencepiece-dev does not ship the generated header).

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/io/gguf.hpp"

namespace moe::io {
namespace protobuf {

/// Protocol-buffer wire format: a field is a varint key (number << 3 | wire
/// type) and its value; wire type 0 varint, 2 length-delimited, 5 fixed32.
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

}  // namespace protobuf

/// The GGUF's `llama` tokenizer as a SentencePiece tokenizer.model (bytes).
inline std::string gguf_sentencepiece_model(const Gguf& g) {
  const std::string model = g.get_string_or("tokenizer.ggml.model").value_or("(none)");
  detail::require(model == "llama", ErrorCode::unsupported, g.path().string(), ": tokenizer model '", model,
                  "' cannot be written as a SentencePiece tokenizer.model (only 'llama' can)");
  const std::vector<std::string>& tokens = g.get_strings("tokenizer.ggml.tokens");
  const std::vector<double> scores =
      g.contains("tokenizer.ggml.scores") ? g.get_numbers("tokenizer.ggml.scores") : std::vector<double>(tokens.size());
  const std::vector<double> types = g.contains("tokenizer.ggml.token_type") ? g.get_numbers("tokenizer.ggml.token_type")
                                                                            : std::vector<double>(tokens.size(), 1);
  detail::require(scores.size() == tokens.size() && types.size() == tokens.size(), ErrorCode::bad_file,
                  g.path().string(), ": tokenizer.ggml.tokens has ", tokens.size(), " entries but scores ",
                  scores.size(), " and token_type ", types.size());
  std::string proto;
  bool has_bytes = false;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    // GGUF's token types number SentencePiece's piece types: 1 normal, 2
    // unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    const int type = int(types[i]);
    detail::require(type >= 1 && type <= 6, ErrorCode::bad_file, g.path().string(), ": token ", i, " ('", tokens[i],
                    "') has type ", types[i], ", expected 1 to 6");
    has_bytes = has_bytes || type == 6;
    std::string piece;
    protobuf::bytes_field(piece, 1, tokens[i]);
    protobuf::float_field(piece, 2, float(scores[i]));
    protobuf::int_field(piece, 3, type);
    protobuf::bytes_field(proto, 1, piece);
  }
  std::string trainer;
  protobuf::int_field(trainer, 3, 2);  // model_type: BPE
  protobuf::int_field(trainer, 4, std::int64_t(tokens.size()));
  protobuf::int_field(trainer, 25, 1);                  // split_digits
  protobuf::int_field(trainer, 26, 1);                  // allow_whitespace_only_pieces
  protobuf::int_field(trainer, 35, has_bytes ? 1 : 0);  // byte_fallback
  protobuf::int_field(trainer, 40, g.get_int_or("tokenizer.ggml.unknown_token_id").value_or(0));
  protobuf::int_field(trainer, 41, g.get_int_or("tokenizer.ggml.bos_token_id").value_or(1));
  protobuf::int_field(trainer, 42, g.get_int_or("tokenizer.ggml.eos_token_id").value_or(2));
  protobuf::int_field(trainer, 43, g.get_int_or("tokenizer.ggml.padding_token_id").value_or(-1));
  protobuf::bytes_field(proto, 2, trainer);
  std::string normalizer;
  protobuf::bytes_field(normalizer, 1, "identity");
  const bool prefix =
      g.contains("tokenizer.ggml.add_space_prefix") ? g.get_bool("tokenizer.ggml.add_space_prefix") : true;
  protobuf::int_field(normalizer, 3, prefix ? 1 : 0);  // add_dummy_prefix
  protobuf::int_field(normalizer, 4, 0);               // remove_extra_whitespaces: no
  protobuf::int_field(normalizer, 5, 1);               // escape_whitespaces: spaces as ▁
  protobuf::bytes_field(proto, 3, normalizer);
  return proto;
}

}  // namespace moe::io
