#pragma once
/// \file sentencepiece.hpp
/// Text in and out of a model through SentencePiece, the tokenizer of
/// Mixtral and Llama checkpoints (their tokenizer.model).
///
/// Optional: this header needs libsentencepiece (Debian libsentencepiece-dev)
/// at link time; nothing else in moe includes it. In CMake, link the
/// `sentencepiece` pkg-config module (see this project's CMakeLists.txt).

#include <sentencepiece_processor.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/io/mapped_file.hpp"
#include "moe/io/protobuf_wire.hpp"

namespace moe::text {

namespace detail {
/// A serialized SentencePiece ModelProto with its normaliser switched off:
/// rule "identity" (no NFKC), no dummy "▁" prefix, spaces not collapsed;
/// and without self-test samples (they were encoded with the normaliser).
/// libsentencepiece installs no protobuf headers, so this edits the wire
/// format directly: ModelProto field 3 is the NormalizerSpec, field 4 the
/// self-test data; in NormalizerSpec, 1 is the rule name, 2 its compiled
/// map, 3 add_dummy_prefix, 4 remove_extra_whitespaces. A field that occurs
/// twice takes its last value, so appending the new values overrides.
inline std::string without_text_normalization(const std::string& proto) {
  io::protobuf::Reader r(proto, "SentencePiece model");
  std::string out, normalizer;
  while (!r.done()) {
    const std::size_t start = r.position();
    const auto [field, wire] = r.key();
    if (field == 3 && wire == 2) {
      normalizer += r.bytes();
      continue;
    }
    r.skip(wire);
    if (field != 4) out.append(proto, start, r.position() - start);
  }
  normalizer += std::string("\x0a\x08identity\x12\x00\x18\x00\x20\x00", 16);
  io::protobuf::bytes_field(out, 3, normalizer);
  return out;
}
}  // namespace detail

class SentencePiece {
 public:
  explicit SentencePiece(const std::filesystem::path& model_file) {
    io::require_regular_file(model_file);  // a directory or FIFO: a clear error, not a stream exception or a hang
    const auto status = processor_.Load(model_file.string());
    moe::detail::require(status.ok(), ErrorCode::bad_file, model_file.string(), ": not a SentencePiece model (",
                         status.ToString(), ")");
    load_verbatim(model_file.string());
  }

  /// A model from its serialized ModelProto: a tokenizer.model's bytes, or
  /// one built from a GGUF vocabulary (io::gguf_sentencepiece_model).
  struct Proto {
    std::string bytes;
    std::string source;  ///< names it in errors
  };
  explicit SentencePiece(const Proto& proto) {
    const auto status = processor_.LoadFromSerializedProto(proto.bytes);
    moe::detail::require(status.ok(), ErrorCode::bad_file, proto.source, ": not a SentencePiece model (",
                         status.ToString(), ")");
    load_verbatim(proto.source);
  }

  std::int32_t vocab_size() const { return processor_.GetPieceSize(); }
  std::int32_t bos_id() const { return processor_.bos_id(); }  ///< -1 when the model has none
  std::int32_t eos_id() const { return processor_.eos_id(); }

  /// The byte a byte-fallback piece (<0x0A>, type BYTE) stands for; nothing
  /// for any other piece.
  std::optional<unsigned char> byte_of(std::int32_t id) const {
    if (id < 0 || id >= vocab_size() || !processor_.IsByte(id)) return std::nullopt;
    const std::string piece = processor_.IdToPiece(id);  // "<0xHH>"
    return static_cast<unsigned char>(std::stoi(piece.substr(3, 2), nullptr, 16));
  }

  /// Token ids of `text`, with BOS first when asked (Mixtral's tokenizer adds it).
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos = true) const {
    std::vector<int> ids;
    const auto status = processor_.Encode(std::string(text), &ids);
    moe::detail::require(status.ok(), ErrorCode::invalid_argument, "SentencePiece: cannot encode (", status.ToString(),
                         ")");
    std::vector<std::int32_t> out;
    if (add_bos && bos_id() >= 0) out.push_back(bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  /// Token ids of `text` with SentencePiece's normaliser off: no "▁" put
  /// before the first word, no NFKC, runs of spaces kept (each space a "▁").
  /// This is how Hugging Face's tokenizers, converted from a tokenizer.model,
  /// split a segment of text they add no prefix to (the text after a special
  /// token, with Llama's "first" prefix scheme); prepend a space for one that
  /// does. No BOS is added.
  std::vector<std::int32_t> encode_verbatim(std::string_view text) const {
    std::vector<int> ids;
    const auto status = verbatim_.Encode(std::string(text), &ids);
    moe::detail::require(status.ok(), ErrorCode::invalid_argument, "SentencePiece: cannot encode (", status.ToString(),
                         ")");
    return {ids.begin(), ids.end()};
  }

  /// Token ids of `text` in which special pieces are written out (<s>,
  /// </s>, <unk> and any other control piece: a chat template's output),
  /// as transformers' tokenizer for this model splits it: each special
  /// piece's text becomes its id (the earliest match, then the longest),
  /// and every section of text around them is encoded with one "▁" before
  /// it (the converted tokenizer's "always" prefix scheme: "<s>[INST]" is
  /// <s>, "▁[", "INST", "]", as Mixtral's prompts are): verbatim, a space
  /// at its start serving as that "▁", where the model's normaliser changes
  /// nothing (Llama's, Mistral's); through the normaliser where it does
  /// (NFKC, collapsed whitespace), as transformers applies it to each
  /// section too. No BOS is added.
  std::vector<std::int32_t> encode_special(std::string_view text) const {
    std::vector<std::int32_t> out;
    std::size_t at = 0;
    while (at < text.size()) {
      std::size_t next = std::string_view::npos, length = 0;
      std::int32_t id = -1;
      for (const auto& [piece, piece_id] : specials_) {
        const std::size_t found = text.find(piece, at);
        if (found < next || (found == next && found != std::string_view::npos && piece.size() > length))
          next = found, length = piece.size(), id = piece_id;
      }
      const std::string_view section = text.substr(at, next == std::string_view::npos ? next : next - at);
      if (!section.empty()) {
        const std::vector<std::int32_t> ids =
            normalizes_ ? encode(section, false)
                        : encode_verbatim(section.starts_with(' ') ? std::string(section) : " " + std::string(section));
        out.insert(out.end(), ids.begin(), ids.end());
      }
      if (next == std::string_view::npos) break;
      out.push_back(id);
      at = next + length;
    }
    return out;
  }

  /// The text of `ids` (special tokens decode to nothing).
  std::string decode(std::span<const std::int32_t> ids) const {
    std::vector<int> v(ids.begin(), ids.end());
    for (int id : v)
      moe::detail::require(id >= 0 && id < vocab_size(), ErrorCode::invalid_argument, "SentencePiece: token id ", id,
                           " is outside the vocabulary [0, ", vocab_size(), ")");
    std::string text;
    const auto status = processor_.Decode(v, &text);
    moe::detail::require(status.ok(), ErrorCode::invalid_argument, "SentencePiece: cannot decode (", status.ToString(),
                         ")");
    return text;
  }

 private:
  void load_verbatim(const std::string& what) {
    const auto plain = verbatim_.LoadFromSerializedProto(
        detail::without_text_normalization(std::string(processor_.serialized_model_proto())));
    moe::detail::require(plain.ok(), ErrorCode::bad_file, what,
                         ": cannot reload the SentencePiece model without normalisation (", plain.ToString(), ")");
    for (std::int32_t id = 0; id < vocab_size(); ++id)
      if (processor_.IsControl(id) || processor_.IsUnknown(id)) specials_.emplace_back(processor_.IdToPiece(id), id);
    // Whether the normaliser changes text: spaces collapsed, tabs and
    // compatibility characters mapped (a sentencepiece trainer's default).
    const std::string probe = "a  b\tc \xEF\xAC\x81 ";  // U+FB01, NFKC's "fi"
    normalizes_ = encode(probe, false) != encode_verbatim(" " + probe);
  }

  sentencepiece::SentencePieceProcessor processor_;
  sentencepiece::SentencePieceProcessor verbatim_;              ///< the same pieces, normaliser off (see above)
  std::vector<std::pair<std::string, std::int32_t>> specials_;  ///< control and unknown pieces, by text
  bool normalizes_ = false;  ///< the model's normaliser changes text (see encode_special)
};

/// Prints a growing token sequence as text without re-printing: pieces
/// decode differently in context (the "▁" word marks, byte-fallback
/// sequences), so the whole sequence is decoded and only the new suffix is
/// emitted.
///
/// A character the vocabulary lacks comes as one byte piece per UTF-8 byte
/// (an emoji: four tokens). SentencePiece decodes an unfinished sequence as
/// U+FFFD, so the text is held back while the trailing byte pieces do not
/// yet end a character; when they do, the character is printed whole (and
/// bytes that can never form one still print as U+FFFD).
class StreamDecoder {
 public:
  explicit StreamDecoder(const SentencePiece& sp) : sp_(sp) {}
  /// Adds a token; returns the text it completes (may be empty).
  std::string push(std::int32_t id) {
    ids_.push_back(id);
    std::string tail;  // the bytes of the trailing byte pieces
    for (auto it = ids_.rbegin(); it != ids_.rend(); ++it) {
      const auto byte = sp_.byte_of(*it);
      if (!byte) break;
      tail.insert(tail.begin(), static_cast<char>(*byte));
    }
    if (!complete_utf8(tail)) return {};
    const std::string text = sp_.decode(ids_);
    if (text.size() < printed_) return {};
    std::string fresh = text.substr(printed_);
    printed_ = text.size();
    return fresh;
  }

 private:
  static bool complete_utf8(const std::string& s) {
    std::size_t i = s.size(), back = 0;
    while (i > 0 && back < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++back;
    if (i == 0) return true;  // continuation bytes with no lead before them: never a character
    const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
    const std::size_t need = lead < 0x80 ? 0 : lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    return back >= need;
  }

  const SentencePiece& sp_;
  std::vector<std::int32_t> ids_;
  std::size_t printed_ = 0;
};

}  // namespace moe::text
