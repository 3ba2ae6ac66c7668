#pragma once
/// \file byte_bpe.hpp
/// Byte-level BPE, GPT-2's tokenizer scheme (SmolLM, StarCoder, Llama 3,
/// Qwen...: a GGUF `tokenizer.ggml.model` of `gpt2`), tokenising as
/// llama.cpp does.
///
/// Text becomes tokens in three steps:
///  1. special tokens (<|im_start|> ...) are cut out of the text first, the
///     longest first; control tokens only when asked (parse_special), as a
///     chat template's are, never from a user's text by accident;
///  2. the rest is split into pieces by the pre-tokenizer's regexes (words
///     with their leading space, runs of digits or single digits, runs of
///     punctuation, whitespace), which need Unicode classes (\p{L}, \p{N}):
///     PCRE2 runs them, std::regex cannot;
///  3. each piece's UTF-8 bytes are spelt in GPT-2's printable alphabet (a
///     byte is a character; the space is "Ġ") and merged pairwise, always
///     the pair that comes first in the merge list, until no listed pair is
///     left; each remaining symbol is a token.
/// Decoding spells each token back into bytes; a character may span
/// tokens, so a stream is printed by whole characters (Utf8Stream).
///
/// The same engine runs SentencePiece's BPE as a tokenizer.json describes
/// it (BpeVocab::byte_fallback: Llama, Mistral): no regex split; the text
/// rewritten as its normalizers say, spaces as "▁" and a "▁" prefix
/// (Metaspace); characters, not bytes, as the symbols merged; and a symbol
/// the vocabulary lacks spelt as <0xHH> byte tokens.
///
/// Optional: this header needs libpcre2-8 (Debian libpcre2-dev) at link
/// time; in CMake, link moe::bpe.

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/text/bpe_vocab.hpp"

namespace moe::text {

namespace bpe_detail {

inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

/// GPT-2's byte alphabet: the printable bytes stand for themselves, the
/// other 68 (controls, space, ...) for code points 256, 257, ... in order.
inline const std::array<std::string, 256>& byte_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      append_utf8(t[std::size_t(b)], printable ? char32_t(b) : next++);
    }
    return t;
  }();
  return table;
}

/// Length of the UTF-8 character that starts with byte `lead` (1 for a stray byte).
inline std::size_t utf8_length(unsigned char lead) { return lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

/// One compiled PCRE2 pattern (UTF, Unicode classes): the spans of a text it
/// matches, and the text between them, in order.
class Regex {
 public:
  Regex(const std::string& pattern, std::string_view source) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                              &error, &offset, nullptr));
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw Error(ErrorCode::unsupported, moe::detail::cat(source, ": pre-tokenizer regex does not compile at ", offset,
                                                           ": ", reinterpret_cast<const char*>(message)));
    }
    match_.reset(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  }

  /// `text` with every match replaced by `content` (taken literally).
  std::string replace(std::string_view text, const std::string& content) const {
    std::string out;
    std::size_t at = 0;
    while (at <= text.size()) {
      const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                                 PCRE2_NO_UTF_CHECK, match_.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      moe::detail::require(rc > 0, ErrorCode::unsupported, "rewrite regex failed (PCRE2 error ", rc, ")");
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match_.get());
      out.append(text.substr(at, span[0] - at)).append(content);
      if (span[1] == span[0]) {  // an empty match: keep the character after it, step on
        if (span[0] == text.size()) return out;
        const std::size_t n = utf8_length(static_cast<unsigned char>(text[span[0]]));
        out.append(text.substr(span[0], n));
        at = span[0] + n;
      } else {
        at = span[1];
      }
    }
    if (at < text.size()) out.append(text.substr(at));
    return out;
  }

  /// Splits `text` (valid UTF-8) into matches and the gaps between them.
  void split(std::string_view text, std::vector<std::string_view>& out) const {
    std::size_t at = 0, gap = 0;
    while (at < text.size()) {
      const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                                 PCRE2_NO_UTF_CHECK, match_.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      moe::detail::require(rc > 0, ErrorCode::unsupported, "pre-tokenizer regex failed (PCRE2 error ", rc, ")");
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match_.get());
      if (span[1] == span[0]) {  // an empty match: step one character on
        at = span[0] + utf8_length(static_cast<unsigned char>(text[span[0]]));
        continue;
      }
      if (span[0] > gap) out.push_back(text.substr(gap, span[0] - gap));
      out.push_back(text.substr(span[0], span[1] - span[0]));
      at = gap = span[1];
    }
    if (gap < text.size()) out.push_back(text.substr(gap));
  }

 private:
  struct FreeCode {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };
  struct FreeMatch {
    void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
  };
  std::unique_ptr<pcre2_code, FreeCode> code_;
  std::unique_ptr<pcre2_match_data, FreeMatch> match_;
};

/// Whether `s` is valid UTF-8 (PCRE2 is run without its own check); the
/// offset of the first bad byte otherwise.
inline std::size_t invalid_utf8_at(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const std::size_t n = lead < 0x80                     ? 1
                          : (lead >= 0xC2 && lead < 0xE0) ? 2
                          : (lead >= 0xE0 && lead < 0xF0) ? 3
                          : (lead >= 0xF0 && lead < 0xF5) ? 4
                                                          : 0;
    if (n == 0 || i + n > s.size()) return i;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return i;
    i += n;
  }
  return std::string_view::npos;
}

}  // namespace bpe_detail

class BpeTokenizer {
 public:
  explicit BpeTokenizer(BpeVocab vocab) : v_(std::move(vocab)) {
    const auto n = v_.tokens.size();
    moe::detail::require(n > 0 && n < std::size_t(std::numeric_limits<std::int32_t>::max()), ErrorCode::bad_file,
                         v_.source, ": a BPE vocabulary needs tokens, got ", n);
    moe::detail::require(v_.types.empty() || v_.types.size() == n, ErrorCode::bad_file, v_.source, ": ", n,
                         " tokens but ", v_.types.size(), " token types");
    if (v_.types.empty()) v_.types.assign(n, 1);
    for (std::size_t i = 0; i < n; ++i) ids_.emplace(v_.tokens[i], std::int32_t(i));
    for (std::size_t r = 0; r < v_.merges.size(); ++r) {
      const std::string& m = v_.merges[r];
      const std::size_t space = m.find(' ');  // symbols hold no space: the byte alphabet spells it "Ġ"
      moe::detail::require(space != std::string::npos && space + 1 < m.size(), ErrorCode::bad_file, v_.source,
                           ": merge ", r, " is '", m, "'; expected two symbols separated by a space");
      ranks_.emplace(m, std::int32_t(r));
    }
    for (const std::int32_t id : {v_.bos_id, v_.eos_id, v_.unk_id})
      moe::detail::require(id >= -1 && id < std::int32_t(n), ErrorCode::bad_file, v_.source, ": special token id ", id,
                           " is outside the vocabulary [0, ", n, ")");
    for (std::size_t i = 0; i < n; ++i)  // control, user-defined and unknown tokens are cut out of text whole
      if ((v_.types[i] == 2 || v_.types[i] == 3 || v_.types[i] == 4) && !v_.tokens[i].empty())
        specials_.push_back(std::int32_t(i));
    std::stable_sort(specials_.begin(), specials_.end(), [&](std::int32_t a, std::int32_t b) {
      return v_.tokens[std::size_t(a)].size() > v_.tokens[std::size_t(b)].size();
    });
    if (!v_.byte_fallback)
      for (const std::string& pattern :
           v_.pre_regexes.empty() ? pre_tokenizer_regexes(v_.pre, v_.source) : v_.pre_regexes)
        regexes_.emplace_back(pattern, v_.source);
    for (const BpeVocab::Rewrite& r : v_.rewrites)
      rewrite_regexes_.push_back(r.regex ? std::make_optional<bpe_detail::Regex>(r.pattern, v_.source) : std::nullopt);
    // The byte alphabet back to bytes.
    const auto& chars = bpe_detail::byte_chars();
    for (int b = 0; b < 256; ++b) byte_of_char_.emplace(chars[std::size_t(b)], char(b));
  }

  std::int32_t vocab_size() const { return std::int32_t(v_.tokens.size()); }
  std::int32_t bos_id() const { return v_.bos_id; }
  std::int32_t eos_id() const { return v_.eos_id; }
  /// Whether encode() puts BOS first when asked to (the vocabulary's own say).
  bool adds_bos() const { return v_.add_bos && v_.bos_id >= 0; }
  const BpeVocab& vocab() const { return v_; }

  /// Token ids of `text` (UTF-8). BOS first when `add_bos` and the
  /// vocabulary adds one; control tokens in the text are read as such only
  /// with `parse_special` (a chat template's markers), else as plain text.
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos = true, bool parse_special = false) const {
    const std::size_t bad = bpe_detail::invalid_utf8_at(text);
    moe::detail::require(bad == std::string_view::npos, ErrorCode::invalid_argument,
                         "BPE: the text is not valid UTF-8 (byte ", bad, ")");
    std::vector<std::int32_t> out;
    if (add_bos && adds_bos()) out.push_back(v_.bos_id);
    // 1. Special tokens out first, the longest first.
    struct Fragment {
      std::string_view text;
      std::int32_t special = -1;
    };
    std::vector<Fragment> fragments = {{text}};
    for (const std::int32_t id : specials_) {
      if (!parse_special && v_.types[std::size_t(id)] != 4) continue;  // only user-defined ones without it
      const std::string& s = v_.tokens[std::size_t(id)];
      std::vector<Fragment> next;
      for (const Fragment& f : fragments) {
        if (f.special >= 0) {
          next.push_back(f);
          continue;
        }
        std::size_t from = 0;
        for (std::size_t at; (at = f.text.find(s, from)) != std::string_view::npos; from = at + s.size()) {
          if (at > from) next.push_back({f.text.substr(from, at - from)});
          next.push_back({{}, id});
        }
        if (from < f.text.size()) next.push_back({f.text.substr(from)});
      }
      fragments = std::move(next);
    }
    // 2. and 3. Pieces of each plain fragment, merged.
    std::vector<std::string_view> pieces, split;
    for (const Fragment& f : fragments) {
      if (f.special >= 0) {
        out.push_back(f.special);
        continue;
      }
      if (v_.byte_fallback) {
        merge_characters(spelt(f.text, f.text.data() == text.data()), out);
        continue;
      }
      pieces.assign(1, f.text);
      for (const bpe_detail::Regex& r : regexes_) {
        split.clear();
        for (const std::string_view p : pieces) r.split(p, split);
        pieces.swap(split);
      }
      for (const std::string_view p : pieces) merge_piece(p, out);
    }
    return out;
  }

  /// The bytes of one token (control tokens: none; user-defined: their text).
  std::string token_bytes(std::int32_t id) const {
    check_id(id);
    const std::string& t = v_.tokens[std::size_t(id)];
    const std::int32_t type = v_.types[std::size_t(id)];
    if (type == 3) return {};
    if (type == 4) return t;
    if (v_.byte_fallback) {  // <0xHH> is a byte; "▁" a space
      if (const int b = byte_token(t); b >= 0) return std::string(1, char(b));
      std::string out;
      for (std::size_t i = 0; i < t.size();)
        if (t.compare(i, 3, "\xE2\x96\x81") == 0) {
          out += ' ';
          i += 3;
        } else {
          out += t[i++];
        }
      return out;
    }
    std::string bytes;
    for (std::size_t i = 0; i < t.size();) {
      const std::size_t n = bpe_detail::utf8_length(static_cast<unsigned char>(t[i]));
      const auto it = byte_of_char_.find(t.substr(i, n));
      if (it != byte_of_char_.end())
        bytes += it->second;
      else
        bytes.append(t, i, n);  // not in the byte alphabet: the character itself
      i += n;
    }
    return bytes;
  }

  /// The bytes of `ids`; may end inside a character (see Utf8Stream).
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string out;
    for (const std::int32_t id : ids) out += token_bytes(id);
    if (v_.strip_leading_space && !out.empty() && out.front() == ' ') out.erase(0, 1);
    return out;
  }

 private:
  void check_id(std::int32_t id) const {
    moe::detail::require(id >= 0 && id < vocab_size(), ErrorCode::invalid_argument, v_.source, ": token id ", id,
                         " is outside the vocabulary [0, ", vocab_size(), ")");
  }

  /// "<0xHH>" as the byte it stands for; -1 for any other token.
  static int byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int b = 0;
    for (const char c : t.substr(3, 2)) {
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      b = b * 16 + d;
    }
    return b;
  }

  /// A text segment as SentencePiece-style BPE sees it: the rewrites, then
  /// Metaspace's spaces as "▁" and its prefix.
  std::string spelt(std::string_view segment, bool at_start) const {
    std::string t(segment);
    for (std::size_t k = 0; k < v_.rewrites.size(); ++k) {
      const BpeVocab::Rewrite& r = v_.rewrites[k];
      if (rewrite_regexes_[k]) {
        t = rewrite_regexes_[k]->replace(t, r.content);
      } else if (!r.pattern.empty()) {
        std::string out;
        for (std::size_t at = 0;;) {
          const std::size_t hit = t.find(r.pattern, at);
          out.append(t, at, hit == std::string::npos ? std::string::npos : hit - at);
          if (hit == std::string::npos) break;
          out += r.content;
          at = hit + r.pattern.size();
        }
        t = std::move(out);
      }
    }
    if (v_.metaspace) {
      const std::string mark = "\xE2\x96\x81";
      std::string out;
      for (const char c : t) c == ' ' ? out += mark : out += c;
      const bool prefix = v_.prefix == BpeVocab::Prefix::always || (v_.prefix == BpeVocab::Prefix::first && at_start);
      if (prefix && !out.empty() && out.compare(0, 3, mark) != 0) out.insert(0, mark);
      t = std::move(out);
    }
    return t;
  }

  /// SentencePiece-style: one symbol per character, merged by rank; a
  /// symbol the vocabulary lacks as its bytes' <0xHH> tokens.
  void merge_characters(const std::string& text, std::vector<std::int32_t>& out) const {
    std::vector<std::string> symbols;
    for (std::size_t i = 0; i < text.size();) {
      const std::size_t n = std::min(text.size() - i, bpe_detail::utf8_length(static_cast<unsigned char>(text[i])));
      symbols.push_back(text.substr(i, n));
      i += n;
    }
    merge(symbols);
    for (const std::string& s : symbols) {
      if (const auto it = ids_.find(s); it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (const unsigned char b : s) {
        static constexpr char hex[] = "0123456789ABCDEF";
        const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
        const auto it = ids_.find(name);
        moe::detail::require(it != ids_.end() || v_.unk_id >= 0, ErrorCode::bad_file, v_.source, ": byte token ", name,
                             " is not in the vocabulary, which has no unknown token");
        out.push_back(it != ids_.end() ? it->second : v_.unk_id);
      }
    }
  }

  /// Merges adjacent symbols, always the pair that comes first in the merge list.
  void merge(std::vector<std::string>& symbols) const {
    std::string pair;
    while (symbols.size() > 1) {
      std::int32_t best = std::numeric_limits<std::int32_t>::max();
      std::size_t at = 0;
      for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
        pair.assign(symbols[i]).append(" ").append(symbols[i + 1]);
        const auto it = ranks_.find(pair);
        if (it != ranks_.end() && it->second < best) best = it->second, at = i;
      }
      if (best == std::numeric_limits<std::int32_t>::max()) break;
      symbols[at] += symbols[at + 1];
      symbols.erase(symbols.begin() + std::ptrdiff_t(at) + 1);
    }
  }

  /// A piece's bytes in the byte alphabet, one symbol per byte, merged by rank.
  void merge_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
    const auto& chars = bpe_detail::byte_chars();
    std::vector<std::string> symbols;
    symbols.reserve(piece.size());
    for (const char c : piece) symbols.push_back(chars[static_cast<unsigned char>(c)]);
    merge(symbols);
    for (const std::string& s : symbols) {
      const auto it = ids_.find(s);
      if (it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
      // A symbol the vocabulary lacks: its bytes one by one (every byte is a token in a complete vocabulary).
      for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = bpe_detail::utf8_length(static_cast<unsigned char>(s[i]));
        const auto one = ids_.find(s.substr(i, n));
        moe::detail::require(one != ids_.end() || v_.unk_id >= 0, ErrorCode::bad_file, v_.source, ": symbol '",
                             s.substr(i, n), "' is not in the vocabulary, which has no unknown token");
        out.push_back(one != ids_.end() ? one->second : v_.unk_id);
        i += n;
      }
    }
  }

  BpeVocab v_;
  std::unordered_map<std::string, std::int32_t> ids_, ranks_;
  std::unordered_map<std::string, char> byte_of_char_;
  std::vector<std::int32_t> specials_;  ///< cut out of text first, longest first
  std::vector<bpe_detail::Regex> regexes_;
  std::vector<std::optional<bpe_detail::Regex>> rewrite_regexes_;  ///< per rewrite: its regex, if it is one
};

/// Prints a byte stream by whole UTF-8 characters: bytes that end inside a
/// character are held until it is complete.
class Utf8Stream {
 public:
  /// Adds bytes; returns those that now end a character.
  std::string push(std::string_view bytes) {
    pending_ += bytes;
    std::size_t i = pending_.size(), back = 0;
    while (i > 0 && back < 3 && (static_cast<unsigned char>(pending_[i - 1]) & 0xC0) == 0x80) --i, ++back;
    std::size_t keep = 0;
    if (i > 0) {
      const auto lead = static_cast<unsigned char>(pending_[i - 1]);
      if (lead >= 0xC0 && bpe_detail::utf8_length(lead) > back + 1) keep = back + 1;  // its character is not done
    }
    std::string ready = pending_.substr(0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return ready;
  }
  /// What is left (a character cut short), to print at the end.
  std::string flush() { return std::exchange(pending_, {}); }

 private:
  std::string pending_;
};

}  // namespace moe::text
