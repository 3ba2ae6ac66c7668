#pragma once
/// \file jinja_lexer.hpp
/// A chat template's source cut into pieces (text::jinja::Template's first
/// step): segments of text, {{ expression }} and {% statement %} with the
/// whitespace around block tags handled as jinja2 handles it (`-` on a
/// tag's side strips all whitespace there; trim_blocks drops the newline
/// after a block tag; lstrip_blocks the indentation before one that starts
/// its line), then each tag's inside cut into tokens.

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/error.hpp"

namespace moe::text::jinja {

/// What the renderer does with the whitespace around block tags (the
/// defaults are what transformers' apply_chat_template uses), and the
/// bounds that keep a hostile template from exhausting the machine.
struct Options {
  bool trim_blocks = true;                      ///< drop the first newline after a block tag
  bool lstrip_blocks = true;                    ///< drop spaces and tabs before a block tag that starts its line
  int max_depth = 128;                          ///< nesting of blocks, and of an expression's parts
  std::int64_t max_steps = 10'000'000;          ///< statements run and values computed in one render
  std::size_t max_text = std::size_t(1) << 26;  ///< bytes of the output, or of any one string
};

namespace detail {

[[noreturn]] inline void fail(ErrorCode code, int line, const std::string& what) {
  throw Error(code, moe::detail::cat("chat template, line ", line, ": ", what));
}

// ---------------------------------------------------------------------------
// Source → segments: text, {{ expression }}, {% statement %}.
// ---------------------------------------------------------------------------

struct Segment {
  enum class Kind { text, expression, statement } kind;
  std::string body;  ///< the text, or what stands between the tag's delimiters
  int line;
};

inline bool blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// The template cut into segments, with whitespace control (`-`) and the
/// trim_blocks / lstrip_blocks options applied to the text between tags.
inline std::vector<Segment> segments(std::string_view src, const Options& opt) {
  std::vector<Segment> out;
  std::size_t at = 0;
  int line = 1;
  bool strip_next = false, trim_next = false;  // what the last tag asks of the text after it
  const auto lines_in = [](std::string_view s) { return int(std::count(s.begin(), s.end(), '\n')); };
  while (at <= src.size()) {
    std::size_t open = src.find('{', at);
    while (open != std::string_view::npos && open + 1 < src.size() && src[open + 1] != '{' && src[open + 1] != '%' &&
           src[open + 1] != '#')
      open = src.find('{', open + 1);
    if (open + 1 >= src.size()) open = std::string_view::npos;
    std::string text(src.substr(at, open == std::string_view::npos ? std::string_view::npos : open - at));
    const int text_line = line;
    line += lines_in(text);
    if (strip_next) text.erase(0, std::min(text.size(), text.find_first_not_of(" \t\r\n")));
    if (trim_next) text.erase(0, text.starts_with("\r\n") ? 2 : text.starts_with('\n') ? 1 : 0);
    if (open == std::string_view::npos) {
      if (!text.empty()) out.push_back({Segment::Kind::text, text, text_line});
      break;
    }
    const char kind = src[open + 1];
    const char close = kind == '{' ? '}' : kind == '%' ? '%' : '#';
    std::size_t body = open + 2;
    const bool minus_before = body < src.size() && src[body] == '-';
    const bool plus_before = body < src.size() && src[body] == '+';
    if (minus_before || plus_before) ++body;
    // The closing delimiter, skipping string literals inside the tag.
    std::size_t end = body;
    char quote = 0;
    for (; end + 1 < src.size(); ++end) {
      const char c = src[end];
      if (quote) {
        if (c == '\\')
          ++end;
        else if (c == quote)
          quote = 0;
      } else if (kind != '#' && (c == '\'' || c == '"')) {
        quote = c;
      } else if (c == close && src[end + 1] == '}') {
        break;
      }
    }
    if (end + 1 >= src.size())
      fail(ErrorCode::invalid_argument, line, std::string("a tag opened with {") + kind + " is never closed");
    const bool minus_after = end > body && src[end - 1] == '-';
    std::string inner(src.substr(body, end - body - (minus_after ? 1 : 0)));
    const bool block = kind != '{';  // statements and comments
    if (minus_before) {
      text.erase(text.find_last_not_of(" \t\r\n") + 1);
    } else if (block && opt.lstrip_blocks && !plus_before) {
      // Spaces and tabs between the start of the tag's line (in the
      // source) and the tag go.
      std::size_t k = open;
      while (k > at && (src[k - 1] == ' ' || src[k - 1] == '\t')) --k;
      if (k == 0 || src[k - 1] == '\n') text.erase(text.size() - std::min(text.size(), open - k));
    }
    if (!text.empty()) out.push_back({Segment::Kind::text, text, text_line});
    if (kind == '{') out.push_back({Segment::Kind::expression, inner, line});
    if (kind == '%') out.push_back({Segment::Kind::statement, inner, line});
    line += lines_in(src.substr(open, end + 2 - open));
    strip_next = minus_after;
    trim_next = block && opt.trim_blocks && !minus_after;
    at = end + 2;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Expression tokens.
// ---------------------------------------------------------------------------

struct Token {
  enum class Kind { name, string, integer, op, end } kind;
  std::string text;
  std::int64_t integer = 0;
};

inline std::vector<Token> tokens(std::string_view s, int line) {
  std::vector<Token> out;
  std::size_t i = 0;
  const auto is_name = [](char c, bool first) {
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9');
  };
  while (i < s.size()) {
    const char c = s[i];
    if (blank(c)) {
      ++i;
    } else if (is_name(c, true)) {
      std::size_t j = i;
      while (j < s.size() && is_name(s[j], false)) ++j;
      out.push_back({Token::Kind::name, std::string(s.substr(i, j - i))});
      i = j;
    } else if (c >= '0' && c <= '9') {
      std::size_t j = i;
      std::int64_t v = 0;
      while (j < s.size() && s[j] >= '0' && s[j] <= '9') {
        if (v > (INT64_MAX - (s[j] - '0')) / 10) fail(ErrorCode::unsupported, line, "an integer literal past 64 bits");
        v = v * 10 + (s[j++] - '0');
      }
      if (j < s.size() && s[j] == '.' && j + 1 < s.size() && s[j + 1] >= '0' && s[j + 1] <= '9')
        fail(ErrorCode::unsupported, line, "float literals are not supported");
      out.push_back({Token::Kind::integer, std::string(s.substr(i, j - i)), v});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string text;
      std::size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 == s.size()) {
          text += s[j];
          continue;
        }
        switch (const char e = s[++j]) {
          case 'n':
            text += '\n';
            break;
          case 't':
            text += '\t';
            break;
          case 'r':
            text += '\r';
            break;
          case '\\':
          case '\'':
          case '"':
            text += e;
            break;
          default:  // Python keeps an unknown escape as written
            text += '\\';
            text += e;
        }
      }
      if (j >= s.size()) fail(ErrorCode::invalid_argument, line, "a string literal is never closed");
      out.push_back({Token::Kind::string, text});
      i = j + 1;
    } else {
      static constexpr std::string_view two[] = {"==", "!=", "<=", ">=", "//", "**"};
      std::string op(1, c);
      for (std::string_view t : two)
        if (s.substr(i, 2) == t) op = t;
      if (std::string_view("=!<>+-*/%~()[]{},:.|").find(c) == std::string_view::npos)
        fail(ErrorCode::invalid_argument, line, moe::detail::cat("unexpected character '", c, "' in an expression"));
      out.push_back({Token::Kind::op, op});
      i += op.size();
    }
  }
  out.push_back({Token::Kind::end, ""});
  return out;
}

}  // namespace detail

}  // namespace moe::text::jinja
