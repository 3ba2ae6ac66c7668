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
/// A GGUF of tokenizer model `gpt2` (byte-level BPE) gives its vocabulary
/// and merges to text::BpeTokenizer (gguf_bpe_vocab()).
///
/// The other way, read_sentencepiece_model() reads a tokenizer.model for
/// the GGUF writer. The protobuf is read and written by hand (a few fields
/// of sentencepiece_model.proto; Debian's libsentencepiece-dev does not
/// ship the generated header).

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/io/gguf.hpp"
#include "moe/io/protobuf_wire.hpp"
#include "moe/text/bpe_vocab.hpp"

namespace moe::io {

/// What a SentencePiece tokenizer.model holds that a GGUF stores of it.
struct SentencePieceVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;  ///< SentencePiece's piece types, which are GGUF's token types
  std::int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  bool add_dummy_prefix = true;
};

/// Reads a serialized SentencePiece ModelProto (a tokenizer.model's bytes);
/// `what` names it in errors.
inline SentencePieceVocab read_sentencepiece_model(std::string_view proto, const std::string& what) {
  SentencePieceVocab v;
  protobuf::Reader r(proto, what);
  while (!r.done()) {
    const auto [field, wire] = r.key();
    if (field == 1 && wire == 2) {  // a piece
      protobuf::Reader p(r.bytes(), what + ": piece " + std::to_string(v.tokens.size()));
      std::string piece;
      float score = 0;
      std::int32_t type = 1;
      while (!p.done()) {
        const auto [f, w] = p.key();
        if (f == 1 && w == 2)
          piece = std::string(p.bytes());
        else if (f == 2 && w == 5)
          score = p.fixed32();
        else if (f == 3 && w == 0)
          type = std::int32_t(p.varint());
        else
          p.skip(w);
      }
      v.tokens.push_back(std::move(piece));
      v.scores.push_back(score);
      v.types.push_back(type);
    } else if (field == 2 && wire == 2) {  // TrainerSpec: the special ids
      protobuf::Reader t(r.bytes(), what + ": trainer_spec");
      while (!t.done()) {
        const auto [f, w] = t.key();
        if (w == 0 && f >= 40 && f <= 43) {
          const auto id = std::int32_t(std::int64_t(t.varint()));
          (f == 40 ? v.unk_id : f == 41 ? v.bos_id : f == 42 ? v.eos_id : v.pad_id) = id;
        } else {
          t.skip(w);
        }
      }
    } else if (field == 3 && wire == 2) {  // NormalizerSpec: the dummy prefix
      protobuf::Reader n(r.bytes(), what + ": normalizer_spec");
      while (!n.done()) {
        const auto [f, w] = n.key();
        if (f == 3 && w == 0)
          v.add_dummy_prefix = n.varint() != 0;
        else
          n.skip(w);
      }
    } else {
      r.skip(wire);
    }
  }
  detail::require(!v.tokens.empty(), ErrorCode::bad_file, what, ": no pieces (not a SentencePiece model?)");
  return v;
}

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

/// The GGUF's `gpt2` tokenizer (byte-level BPE: SmolLM, StarCoder, Llama 3,
/// Qwen...) for text::BpeTokenizer: tokens, their types, the merges, the
/// pre-tokenizer's name and the special ids. BOS is added to text only
/// where the file says so (tokenizer.ggml.add_bos_token).
inline text::BpeVocab gguf_bpe_vocab(const Gguf& g) {
  const std::string where = g.path().string();
  const std::string model = g.get_string_or("tokenizer.ggml.model").value_or("(none)");
  detail::require(model == "gpt2", ErrorCode::unsupported, where, ": tokenizer model '", model,
                  "' is not byte-level BPE ('gpt2')");
  text::BpeVocab v;
  v.source = where;
  v.tokens = g.get_strings("tokenizer.ggml.tokens");
  v.merges = g.get_strings("tokenizer.ggml.merges");
  if (g.contains("tokenizer.ggml.token_type")) {
    const std::vector<double> types = g.get_numbers("tokenizer.ggml.token_type");
    detail::require(types.size() == v.tokens.size(), ErrorCode::bad_file, where, ": tokenizer.ggml.tokens has ",
                    v.tokens.size(), " entries but token_type ", types.size());
    for (std::size_t i = 0; i < types.size(); ++i) {
      detail::require(types[i] >= 1 && types[i] <= 6, ErrorCode::bad_file, where, ": token ", i, " ('", v.tokens[i],
                      "') has type ", types[i], ", expected 1 to 6");
      v.types.push_back(std::int32_t(types[i]));
    }
  }
  v.pre = g.get_string_or("tokenizer.ggml.pre").value_or("default");
  const auto id = [&](const char* key) { return std::int32_t(g.get_int_or(key).value_or(-1)); };
  v.bos_id = id("tokenizer.ggml.bos_token_id");
  v.eos_id = id("tokenizer.ggml.eos_token_id");
  v.unk_id = id("tokenizer.ggml.unknown_token_id");
  // llama.cpp's default for a gpt2 vocabulary: no BOS unless the file asks.
  v.add_bos = g.contains("tokenizer.ggml.add_bos_token") && g.get_bool("tokenizer.ggml.add_bos_token");
  return v;
}

}  // namespace moe::io
