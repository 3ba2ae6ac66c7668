#pragma once
/// \file tokenizer_json.hpp
/// Hugging Face's tokenizer.json for a BPE, read into a text::BpeVocab for
/// text::BpeTokenizer: byte-level (GPT-2's scheme: SmolLM, StarCoder,
/// Llama 3, Qwen...) or byte-fallback (SentencePiece's, as Llama and
/// Mistral folders ship it, and all a transformers-5 merge writes); and a
/// byte-level BpeVocab written as one (so a folder made from a GGUF speaks
/// text in transformers too).
///
/// What is read: model.vocab and model.merges ("a b" strings or [a, b]
/// pairs), added_tokens (special ones are control tokens, the others
/// user-defined), the pre_tokenizer as regexes (ByteLevel's own GPT-2
/// regex, Digits, Split with a regex, Sequences of them), and a
/// TemplateProcessing post-processor that puts a special token first (BOS).
/// A byte-fallback file: its normalizers (Replace, Prepend) as rewrites,
/// its Metaspace pre-tokenizer (spaces as "▁", the prefix scheme), the
/// model's unk_token, and a Strip decoder's leading space.
/// Anything else (another normaliser or pre-tokenizer, a prefix space, a
/// model that is not BPE) is refused by name rather than tokenised
/// differently.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/core/error.hpp"
#include "moe/text/bpe_vocab.hpp"

namespace moe::text {

namespace tokenizer_json_detail {

using nlohmann::json;

inline void pre_tokenizer(const json& p, std::vector<std::string>& regexes, const std::string& where) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const json& q : p.at("pretokenizers")) pre_tokenizer(q, regexes, where);
  } else if (type == "ByteLevel") {
    moe::detail::require(!p.value("add_prefix_space", false), ErrorCode::unsupported, where,
                         ": a ByteLevel pre-tokenizer with add_prefix_space is not supported");
    if (p.value("use_regex", true)) regexes.emplace_back(gpt2_pre_regex);
  } else if (type == "Digits") {
    regexes.emplace_back(p.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else if (type == "Split") {
    const json& pattern = p.at("pattern");
    moe::detail::require(
        pattern.contains("Regex") && p.value("behavior", "") == "Isolated" && !p.value("invert", false),
        ErrorCode::unsupported, where,
        ": only Split pre-tokenizers by a regex, behaviour Isolated, are supported; got ", p.dump());
    regexes.push_back(pattern.at("Regex").get<std::string>());
  } else {
    throw Error(ErrorCode::unsupported, moe::detail::cat(where, ": pre-tokenizer type '", type,
                                                         "' is not supported (ByteLevel, Digits, Split, Sequence)"));
  }
}

/// A SentencePiece-style file's normalizers as rewrites (Replace, Prepend).
inline void normalizer(const json& n, BpeVocab& v, const std::string& where) {
  if (n.is_null()) return;
  const std::string type = n.value("type", "");
  if (type == "Sequence") {
    for (const json& m : n.at("normalizers")) normalizer(m, v, where);
  } else if (type == "Replace") {
    const json& p = n.at("pattern");
    const bool regex = p.contains("Regex");
    v.rewrites.push_back(
        {p.at(regex ? "Regex" : "String").get<std::string>(), regex, n.at("content").get<std::string>()});
  } else if (type == "Prepend") {
    v.rewrites.push_back({R"(\A(?=[\s\S]))", true, n.at("prepend").get<std::string>()});  // not before an empty text
  } else {
    throw Error(ErrorCode::unsupported, moe::detail::cat(where, ": normalizer type '", type,
                                                         "' is not supported (Replace, Prepend, Sequence)"));
  }
}

/// A SentencePiece-style file's pre-tokenizer: Metaspace, or none.
inline void metaspace(const json& p, BpeVocab& v, const std::string& where) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const json& q : p.at("pretokenizers")) metaspace(q, v, where);
    return;
  }
  moe::detail::require(
      type == "Metaspace" && p.value("replacement", "") == "\xE2\x96\x81" && !p.value("split", true),
      ErrorCode::unsupported, where,
      ": only a Metaspace pre-tokenizer (replacement \xE2\x96\x81, split false) is supported here; got ", p.dump());
  v.metaspace = true;
  const std::string scheme = p.value("prepend_scheme", "always");
  v.prefix = scheme == "first"   ? BpeVocab::Prefix::first
             : scheme == "never" ? BpeVocab::Prefix::never
                                 : BpeVocab::Prefix::always;
}

/// The special token a TemplateProcessing puts first, if any (BOS).
inline std::string first_special(const json& post) {
  if (post.is_null()) return {};
  if (post.value("type", "") == "Sequence") {
    for (const json& p : post.at("processors"))
      if (const std::string s = first_special(p); !s.empty()) return s;
    return {};
  }
  if (post.value("type", "") != "TemplateProcessing" || !post.contains("single") || post["single"].empty()) return {};
  const json& first = post["single"].front();
  return first.contains("SpecialToken") ? first["SpecialToken"].at("id").get<std::string>() : std::string();
}

}  // namespace tokenizer_json_detail

/// A byte-level BPE tokenizer.json as a BpeVocab.
inline BpeVocab read_tokenizer_json(const std::filesystem::path& file) {
  using nlohmann::json;
  const std::string where = file.string();
  std::ifstream in(file);
  moe::detail::require(bool(in), ErrorCode::bad_file, where, ": cannot open");
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    throw Error(ErrorCode::bad_file, moe::detail::cat(where, ": not valid JSON (", e.what(), ")"));
  }
  try {
    const json& model = j.at("model");
    moe::detail::require(model.value("type", "") == "BPE", ErrorCode::unsupported, where, ": model type '",
                         model.value("type", "(none)"), "' is not BPE");
    BpeVocab v;
    v.source = where;
    v.byte_fallback = model.value("byte_fallback", false);
    const json& decoder = j.value("decoder", json());
    if (v.byte_fallback) {  // SentencePiece-style (Llama, Mistral)
      tokenizer_json_detail::normalizer(j.value("normalizer", json()), v, where);
      tokenizer_json_detail::metaspace(j.value("pre_tokenizer", json()), v, where);
      v.strip_leading_space = decoder.dump().find(R"("type":"Strip")") != std::string::npos;
    } else {
      moe::detail::require(!decoder.is_null() && decoder.value("type", "") == "ByteLevel", ErrorCode::unsupported,
                           where, ": neither a byte-level BPE (its decoder is ", decoder.dump(),
                           ") nor a byte-fallback one (model.byte_fallback)");
      moe::detail::require(j.value("normalizer", json()).is_null(), ErrorCode::unsupported, where,
                           ": a normalizer is not supported in a byte-level BPE (", j["normalizer"].dump(), ")");
    }
    std::size_t n = 0;
    for (const auto& [token, id] : model.at("vocab").items()) n = std::max(n, id.get<std::size_t>() + 1);
    for (const json& a : j.value("added_tokens", json::array())) n = std::max(n, a.at("id").get<std::size_t>() + 1);
    v.tokens.assign(n, {});
    v.types.assign(n, 1);
    std::vector<bool> seen(n);
    for (const auto& [token, id] : model.at("vocab").items()) {
      v.tokens[id.get<std::size_t>()] = token;
      seen[id.get<std::size_t>()] = true;
    }
    for (const json& a : j.value("added_tokens", json::array())) {
      const std::size_t id = a.at("id").get<std::size_t>();
      v.tokens[id] = a.at("content").get<std::string>();
      v.types[id] = a.value("special", false) ? 3 : 4;
      seen[id] = true;
    }
    for (std::size_t i = 0; i < n; ++i)
      moe::detail::require(seen[i], ErrorCode::bad_file, where, ": token id ", i, " is missing (ids must run 0 to ",
                           n - 1, ")");
    for (const json& m : model.at("merges"))
      v.merges.push_back(m.is_string() ? m.get<std::string>()
                                       : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    if (!v.byte_fallback) {
      tokenizer_json_detail::pre_tokenizer(j.value("pre_tokenizer", json()), v.pre_regexes, where);
      moe::detail::require(!v.pre_regexes.empty(), ErrorCode::unsupported, where,
                           ": no pre-tokenizer regex (a byte-level BPE splits text first)");
    }
    v.pre = "tokenizer.json";
    if (model.contains("unk_token") && model["unk_token"].is_string())
      for (std::size_t i = 0; i < n; ++i)
        if (v.tokens[i] == model["unk_token"].get<std::string>()) v.unk_id = std::int32_t(i);
    if (const std::string bos = tokenizer_json_detail::first_special(j.value("post_processor", json())); !bos.empty()) {
      for (std::size_t i = 0; i < n; ++i)
        if (v.tokens[i] == bos) v.bos_id = std::int32_t(i);
      v.add_bos = v.bos_id >= 0;
    }
    return v;
  } catch (const json::exception& e) {
    throw Error(ErrorCode::bad_file, moe::detail::cat(where, ": not a tokenizer.json as expected (", e.what(), ")"));
  }
}

/// A folder's tokenizer.json, with what its tokenizer_config.json adds
/// (transformers keeps them there, not in tokenizer.json): the BOS and EOS
/// tokens, and whether text starts with BOS (add_bos_token).
inline BpeVocab read_tokenizer_folder(const std::filesystem::path& dir) {
  using nlohmann::json;
  BpeVocab v = read_tokenizer_json(dir / "tokenizer.json");
  const std::filesystem::path config_file = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(config_file)) return v;
  json config;
  try {
    std::ifstream(config_file) >> config;
  } catch (const json::exception& e) {
    throw Error(ErrorCode::bad_file, moe::detail::cat(config_file.string(), ": not valid JSON (", e.what(), ")"));
  }
  const auto id_of = [&](const char* key) -> std::int32_t {  // a token as a string, or {"content": ...}
    if (!config.contains(key) || config[key].is_null()) return -1;
    const json& t = config[key];
    const std::string text = t.is_string() ? t.get<std::string>() : t.value("content", "");
    for (std::size_t i = 0; i < v.tokens.size(); ++i)
      if (v.tokens[i] == text) return std::int32_t(i);
    throw Error(ErrorCode::bad_file,
                moe::detail::cat(config_file.string(), ": ", key, " '", text, "' is not a token of tokenizer.json"));
  };
  if (const std::int32_t bos = id_of("bos_token"); bos >= 0) v.bos_id = bos;
  if (const std::int32_t eos = id_of("eos_token"); eos >= 0) v.eos_id = eos;
  if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
    v.add_bos = config["add_bos_token"].get<bool>() && v.bos_id >= 0;
  return v;
}

/// `v` as a tokenizer.json that Hugging Face's tokenizers reads and that
/// tokenises as `v` does.
inline nlohmann::json tokenizer_json(const BpeVocab& v) {
  using nlohmann::json;
  const std::vector<std::string> regexes =
      v.pre_regexes.empty() ? pre_tokenizer_regexes(v.pre, v.source) : v.pre_regexes;
  const json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json pre = json::array();
  for (std::size_t k = 0; k < regexes.size(); ++k) {
    if (regexes[k] == gpt2_pre_regex && k + 1 == regexes.size()) {
      pre.push_back(byte_level);  // ByteLevel's own split is GPT-2's regex
    } else if (regexes[k] == R"(\p{N})") {
      pre.push_back({{"type", "Digits"}, {"individual_digits", true}});
    } else {
      pre.push_back(
          {{"type", "Split"}, {"pattern", {{"Regex", regexes[k]}}}, {"behavior", "Isolated"}, {"invert", false}});
    }
  }
  if (regexes.empty() || regexes.back() != gpt2_pre_regex) {  // the bytes still need their alphabet
    json b = byte_level;
    b["use_regex"] = false;
    pre.push_back(b);
  }
  json vocab = json::object(), added = json::array();
  for (std::size_t i = 0; i < v.tokens.size(); ++i) {
    vocab[v.tokens[i]] = i;
    const std::int32_t type = v.types.empty() ? 1 : v.types[i];
    if (type == 3 || type == 4)
      added.push_back({{"id", i},
                       {"content", v.tokens[i]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", type == 3}});
  }
  json merges = json::array();
  for (const std::string& m : v.merges) {
    const std::size_t space = m.find(' ');
    merges.push_back({m.substr(0, space), m.substr(space + 1)});
  }
  json post = nullptr;
  if (v.add_bos && v.bos_id >= 0) {
    const std::string& bos = v.tokens[std::size_t(v.bos_id)];
    post = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}}}}}};
  }
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre.size() == 1 ? pre[0] : json{{"type", "Sequence"}, {"pretokenizers", pre}}},
          {"post_processor", post},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

}  // namespace moe::text
