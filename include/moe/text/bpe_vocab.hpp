#pragma once
/// \file bpe_vocab.hpp
/// What a byte-level BPE tokenizer is made of, as a GGUF file (tokenizer
/// model `gpt2`) stores it; text::ByteLevelBpe (byte_bpe.hpp) tokenises
/// with it. No library beyond the standard one: readers of vocabularies
/// include this without PCRE2.

#include <cstdint>
#include <string>
#include <vector>

namespace moe::text {

/// A byte-level BPE vocabulary as a GGUF file (or a tokenizer.json) holds it.
struct BpeVocab {
  std::vector<std::string> tokens;  ///< each token in GPT-2's byte alphabet (specials as their text)
  std::vector<std::int32_t> types;  ///< llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  std::vector<std::string> merges;  ///< "left right", first = merged first
  std::string pre = "default";      ///< the pre-tokenizer (tokenizer.ggml.pre)
  std::int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  bool add_bos = false;  ///< whether text starts with BOS (tokenizer.ggml.add_bos_token)
  std::string source;    ///< names the vocabulary in errors
};

}  // namespace moe::text
