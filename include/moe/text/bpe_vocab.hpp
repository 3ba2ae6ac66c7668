#pragma once
/// \file bpe_vocab.hpp
/// What a byte-level BPE tokenizer is made of, as a GGUF file (tokenizer
/// model `gpt2`) stores it; text::BpeTokenizer (byte_bpe.hpp) tokenises
/// with it. No library beyond the standard one: readers of vocabularies
/// include this without PCRE2.

#include <cstdint>
#include <string_view>
#include <string>
#include <vector>

#include "moe/core/error.hpp"

namespace moe::text {

/// A byte-level BPE vocabulary as a GGUF file (or a tokenizer.json) holds it.
struct BpeVocab {
  std::vector<std::string> tokens;  ///< each token in GPT-2's byte alphabet (specials as their text)
  std::vector<std::int32_t> types;  ///< llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  std::vector<std::string> merges;  ///< "left right", first = merged first
  std::string pre = "default";      ///< the pre-tokenizer (tokenizer.ggml.pre), by llama.cpp's name
  std::vector<std::string> pre_regexes;  ///< or its regexes themselves (a tokenizer.json's), applied in order
  std::int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  bool add_bos = false;  ///< whether text starts with BOS (tokenizer.ggml.add_bos_token)

  // SentencePiece-style BPE instead of byte-level (Llama, Mistral as their
  // tokenizer.json ships them): symbols are characters, a space is "▁",
  // and a character the vocabulary lacks is spelt in <0xHH> byte tokens.
  bool byte_fallback = false;
  /// Text rewrites before merging, in order (tokenizer.json normalizers):
  /// `pattern` (a literal, or a regex) replaced by `content` everywhere.
  struct Rewrite {
    std::string pattern;
    bool regex = false;
    std::string content;
  };
  std::vector<Rewrite> rewrites;
  /// Metaspace (tokenizer.json's pre-tokenizer): spaces become "▁", and a
  /// "▁" is put before a text segment that does not start with one: never,
  /// only at the start of the text, or before every segment.
  bool metaspace = false;
  enum class Prefix { never, first, always } prefix = Prefix::never;
  bool strip_leading_space = false;  ///< decoding drops one space at the start (the prefix's)
  std::string source;                ///< names the vocabulary in errors
};

/// GPT-2's pre-tokenizer regex: contractions, a word with its leading
/// space, a number with its leading space, punctuation with its leading
/// space, and spaces (a run of spaces before a word gives that word its
/// space back).
inline constexpr std::string_view gpt2_pre_regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";

/// The pre-tokenizer regexes llama.cpp applies for a `tokenizer.ggml.pre`
/// name, in order (each splits the pieces the one before left).
inline std::vector<std::string> pre_tokenizer_regexes(std::string_view pre, std::string_view source) {
  const std::string gpt2(gpt2_pre_regex);
  if (pre == "default" || pre == "gpt2" || pre == "gpt-2" || pre == "olmo" || pre == "jais") return {gpt2};
  // Digits one by one first (SmolLM, StarCoder, Refact, Command-R...).
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "codeshell" ||
      pre == "exaone" || pre == "minerva")
    return {R"(\p{N})", gpt2};
  // Llama 3's: case-insensitive contractions, numbers in threes, newlines apart.
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" || pre == "pixtral")
    return {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
            R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"};
  // Qwen 2's: Llama 3's with single digits.
  if (pre == "qwen2" || pre == "deepseek-r1-qwen")
    return {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
            R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"};
  throw Error(
      ErrorCode::unsupported,
      moe::detail::cat(source, ": pre-tokenizer '", pre,
                       "' is not known here (known: default/gpt2, smollm, starcoder, refact, command-r, llama3, "
                       "llama-bpe, qwen2)"));
}

}  // namespace moe::text
