#pragma once
/// \file sentencepiece_prompts.hpp
/// mergekit-moe's prompt token ids from a base model's tokenizer.model.
/// mergekit tokenises `bos_token + prompt` with Hugging Face's tokenizer and
/// add_special_tokens=False: the ids are BOS, then the prompt as a segment
/// after a special token. Whether that segment gets a "▁" before its first
/// word depends on how transformers builds the tokenizer (see
/// prefix_after_bos): "chat" is [1, ▁chat] for a Mistral folder but
/// [1, c, h, at] for a Llama one whose tokenizer.json (or tokenizer class)
/// uses the "first" prefix scheme. The gates depend on these ids, so they
/// must be mergekit's: tests/merge_parity checks them against mergekit.
///
/// Needs libsentencepiece at link time (moe/text/sentencepiece.hpp).

#include <filesystem>
#include <memory>
#include <string>

#include "moe/io/checkpoint.hpp"
#include "moe/merge/gates.hpp"
#include "moe/text/sentencepiece.hpp"

namespace moe::merge {

namespace detail {
/// Whether a tokenizer.json normaliser or pre-tokenizer (possibly a
/// Sequence of them) puts "▁" before every segment: a Prepend("▁")
/// normaliser, or a Metaspace with prepend_scheme "always" (add_prefix_space
/// before tokenizers 0.14). Metaspace's "first" or "never": no.
inline bool prepends_space(const nlohmann::json& step) {
  if (!step.is_object()) return false;
  const std::string type = step.value("type", "");
  if (type == "Sequence") {
    for (const char* list : {"normalizers", "pretokenizers"})
      if (step.contains(list))
        for (const auto& s : step[list])
          if (prepends_space(s)) return true;
    return false;
  }
  if (type == "Prepend") return step.value("prepend", "") == "\u2581";
  if (type == "Metaspace")
    return step.contains("prepend_scheme") ? step["prepend_scheme"] == "always" : step.value("add_prefix_space", false);
  return false;
}
}  // namespace detail

/// Whether Hugging Face puts a "▁" before the text that follows BOS in the
/// model folder `dir`, as transformers 5 loads its tokenizer:
///   tokenizer.json present   its normaliser and pre-tokenizer decide
///                            (Llama 2 and Mistral v0.1 prepend "▁": yes)
///   model_type llama         transformers' LlamaTokenizer, converted from
///                            tokenizer.model with the "first" scheme: no
///   otherwise (mistral)      transformers' generic conversion of the
///                            tokenizer.model, scheme "always": yes
inline bool prefix_after_bos(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    const nlohmann::json t = io::read_json(dir / "tokenizer.json");
    for (const char* part : {"normalizer", "pre_tokenizer"})
      if (t.contains(part) && detail::prepends_space(t[part])) return true;
    return false;
  }
  return io::read_json(dir / "config.json").value("model_type", "") != "llama";
}

/// mergekit's prompt ids from `sp`: BOS (when the model has one), then the
/// prompt, after a space when `prefix` (see prefix_after_bos).
inline PromptTokenizer sentencepiece_prompts(std::shared_ptr<const text::SentencePiece> sp, bool prefix) {
  moe::detail::require(sp->bos_id() >= 0 || sp->eos_id() >= 0, ErrorCode::unsupported,
                       "prompt tokenizer: the SentencePiece model has neither BOS nor EOS to pad with");
  PromptTokenizer t;
  t.pad_id = sp->bos_id() >= 0 ? sp->bos_id() : sp->eos_id();
  t.encode = [sp, prefix](const std::string& prompt) {
    std::vector<std::int32_t> ids;
    if (sp->bos_id() >= 0) ids.push_back(sp->bos_id());
    const std::vector<std::int32_t> text = sp->encode_verbatim(prefix ? " " + prompt : prompt);
    ids.insert(ids.end(), text.begin(), text.end());
    return ids;
  };
  return t;
}

/// The prompt tokenizer of the model folder `dir` (its tokenizer.model).
inline PromptTokenizer sentencepiece_prompts(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / "tokenizer.model";
  moe::detail::require(std::filesystem::exists(file), ErrorCode::bad_file, dir.string(),
                       ": no tokenizer.model; the prompt gate modes (hidden, hidden_avg, cheap_embed) tokenise the "
                       "prompts with the base model's SentencePiece model (use random or uniform_random, or "
                       "--router-weights, for a model without one)");
  return sentencepiece_prompts(std::make_shared<const text::SentencePiece>(file), prefix_after_bos(dir));
}

}  // namespace moe::merge
