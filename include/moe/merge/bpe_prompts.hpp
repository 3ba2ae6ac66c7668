#pragma once
/// \file bpe_prompts.hpp
/// mergekit-moe's prompt token ids from a base model's tokenizer.json (a
/// folder with no tokenizer.model, as transformers 5 saves one; Llama 3 and
/// other byte-level BPE models have only this). mergekit tokenises
/// `bos_token + prompt` with Hugging Face's tokenizer and
/// add_special_tokens=False: the BOS text is read as the BOS token, and the
/// prompt after it is a segment of its own, prefixed or not as the file's
/// normaliser and pre-tokenizer say. text::BpeTokenizer reads the text the
/// same way (special tokens parsed), so the ids are mergekit's.
///
/// Needs PCRE2 at link time (moe::bpe).

#include <filesystem>
#include <memory>
#include <string>

#include "moe/merge/gates.hpp"
#include "moe/text/byte_bpe.hpp"
#include "moe/text/tokenizer_json.hpp"

namespace moe::merge {

/// The prompt tokenizer of the model folder `dir` (its tokenizer.json and
/// tokenizer_config.json).
inline PromptTokenizer tokenizer_json_prompts(const std::filesystem::path& dir) {
  moe::detail::require(std::filesystem::exists(dir / "tokenizer.json"), ErrorCode::bad_file, dir.string(),
                       ": no tokenizer.json to tokenise the prompts with");
  const auto bpe = std::make_shared<const text::BpeTokenizer>(text::read_tokenizer_folder(dir));
  const std::int32_t bos = bpe->bos_id(), eos = bpe->eos_id();
  moe::detail::require(bos >= 0 || eos >= 0, ErrorCode::unsupported, dir.string(),
                       ": the tokenizer has neither a BOS nor an EOS token to pad prompts with");
  PromptTokenizer t;
  t.pad_id = bos >= 0 ? bos : eos;
  const std::string bos_text = bos >= 0 ? bpe->vocab().tokens[std::size_t(bos)] : std::string();
  t.encode = [bpe, bos_text](const std::string& prompt) { return bpe->encode(bos_text + prompt, false, true); };
  return t;
}

}  // namespace moe::merge
