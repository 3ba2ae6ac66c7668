#pragma once
/// \file jinja_builtins.hpp
/// What a chat template can call (text::jinja::Template): the string and
/// map methods, filters and tests of Python and Jinja that chat templates
/// use, on values already evaluated, with Python's meaning (str.strip()
/// strips whitespace, str.title() upper-cases each word's first letter,
/// `| length` counts characters, not bytes).

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/text/jinja_lexer.hpp"
#include "moe/text/jinja_value.hpp"
#include "moe/text/utf8.hpp"

namespace moe::text::jinja::builtins {

/// x op y for op in + - * // % on 64-bit integers, Python's rounding
/// (toward −∞), refused where the result does not fit.
inline std::int64_t arithmetic(char op, std::int64_t x, std::int64_t y, int line) {
  constexpr std::int64_t lo = INT64_MIN, hi = INT64_MAX;
  bool fits = true;
  switch (op) {
    case '+':
      fits = y > 0 ? x <= hi - y : x >= lo - y;
      break;
    case '-':
      fits = y < 0 ? x <= hi + y : x >= lo + y;
      break;
    case '*':
      if (x > 0)
        fits = y > 0 ? x <= hi / y : y >= lo / x;
      else if (x < 0)
        fits = y > 0 ? x >= lo / y : y == 0 || (x != lo && y != lo && -x <= hi / -y);
      break;
    default:  // '/' (floor division) and '%'
      if (y == 0) detail::fail(ErrorCode::invalid_argument, line, "division by zero");
      fits = !(x == lo && y == -1);
  }
  if (!fits) detail::fail(ErrorCode::invalid_argument, line, "an integer result past 64 bits");
  switch (op) {
    case '+':
      return x + y;
    case '-':
      return x - y;
    case '*':
      return x * y;
    default: {
      const std::int64_t q = x / y, floor = (x % y != 0 && ((x < 0) != (y < 0))) ? q - 1 : q;
      return op == '/' ? floor : x - floor * y;
    }
  }
}

/// Python's whitespace, as str.strip() and str.split() take it.
inline constexpr std::string_view whitespace = " \t\n\r\v\f";

inline std::string strip(std::string_view s, std::string_view chars, bool left, bool right) {
  std::size_t b = 0, e = s.size();
  while (left && b < e && chars.find(s[b]) != std::string_view::npos) ++b;
  while (right && e > b && chars.find(s[e - 1]) != std::string_view::npos) --e;
  return std::string(s.substr(b, e - b));
}

inline std::string map_chars(std::string s, int (*f)(int)) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x80) c = char(f(c));
  return s;
}

/// Python's str.title(): a letter after a non-letter is upper-cased, the rest lower-cased.
inline std::string title(std::string s) {
  bool after_letter = false;
  for (char& c : s) {
    const bool letter = std::isalpha(static_cast<unsigned char>(c)) != 0;
    if (static_cast<unsigned char>(c) < 0x80) c = char(after_letter ? std::tolower(c) : std::toupper(c));
    after_letter = letter;
  }
  return s;
}

inline std::string capitalize(std::string s) {
  s = map_chars(std::move(s), [](int c) { return std::tolower(c); });
  if (!s.empty() && static_cast<unsigned char>(s[0]) < 0x80) s[0] = char(std::toupper(s[0]));
  return s;
}

inline std::string replace(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

/// Python's str.split(): on runs of whitespace without a separator.
inline Value::List split(const std::string& s, const std::string& sep) {
  Value::List parts;
  if (sep.empty()) {
    std::size_t b = s.find_first_not_of(whitespace);
    while (b != std::string::npos) {
      const std::size_t e = s.find_first_of(whitespace, b);
      parts.push_back(Value::of(s.substr(b, e == std::string::npos ? e : e - b)));
      b = e == std::string::npos ? e : s.find_first_not_of(whitespace, e);
    }
    return parts;
  }
  std::size_t b = 0;
  for (std::size_t e = s.find(sep); e != std::string::npos; b = e + sep.size(), e = s.find(sep, b))
    parts.push_back(Value::of(s.substr(b, e - b)));
  parts.push_back(Value::of(s.substr(b)));
  return parts;
}

/// `obj.m(args)`: the string and map methods chat templates call.
inline Value method(const Value& obj, const std::string& m, const std::vector<Value>& args, int line) {
  const auto arg_string = [&](std::size_t i) {
    if (i >= args.size() || args[i].kind != Value::Kind::string)
      detail::fail(ErrorCode::invalid_argument, line, moe::detail::cat("argument ", i + 1, " must be a string"));
    return args[i].string;
  };

  if (obj.kind == Value::Kind::string) {
    const std::string& s = obj.string;
    if (m == "strip" || m == "lstrip" || m == "rstrip") {
      const std::string chars =
          args.empty() || args[0].kind == Value::Kind::none ? std::string(whitespace) : arg_string(0);
      return Value::of(strip(s, chars, m != "rstrip", m != "lstrip"));
    }
    if (m == "upper") return Value::of(map_chars(s, [](int c) { return std::toupper(c); }));
    if (m == "lower") return Value::of(map_chars(s, [](int c) { return std::tolower(c); }));
    if (m == "title") return Value::of(title(s));
    if (m == "capitalize") return Value::of(capitalize(s));
    if (m == "startswith") return Value::of(s.rfind(arg_string(0), 0) == 0);
    if (m == "endswith") {
      const std::string t = arg_string(0);
      return Value::of(s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0);
    }
    if (m == "replace") return Value::of(replace(s, arg_string(0), arg_string(1)));
    if (m == "split") return Value::of(split(s, args.empty() ? std::string() : arg_string(0)));
  }
  if (obj.kind == Value::Kind::map) {
    if (m == "get") {
      const Value v = obj.at(arg_string(0));
      return v.defined() ? v : args.size() > 1 ? args[1] : Value::none();
    }
    if (m == "items" || m == "keys" || m == "values") {
      Value::List items;
      for (const auto& [k, v] : *obj.map)
        items.push_back(m == "items" ? Value::of(Value::List{Value::of(k), v}) : m == "keys" ? Value::of(k) : v);
      return Value::of(std::move(items));
    }
  }
  detail::fail(ErrorCode::unsupported, line,
               moe::detail::cat("the method ", m, "() of a ", obj.type_name(), " is not supported"));
}
/// `v | f(args)`.
inline Value filter(const Value& v, const std::string& f, const std::vector<Value>& args, int line) {
  const auto need_string = [&] {
    if (v.kind != Value::Kind::string && v.defined())
      detail::fail(ErrorCode::invalid_argument, line, moe::detail::cat("the filter ", f, " of a ", v.type_name()));
    return v.str();
  };
  if (f == "trim")
    return Value::of(strip(need_string(), args.empty() ? whitespace : std::string_view(args[0].string), true, true));
  if (f == "upper") return Value::of(map_chars(need_string(), [](int c) { return std::toupper(c); }));
  if (f == "lower") return Value::of(map_chars(need_string(), [](int c) { return std::tolower(c); }));
  if (f == "title") return Value::of(title(need_string()));
  if (f == "capitalize") return Value::of(capitalize(need_string()));
  if (f == "string") return Value::of(v.str());
  if (f == "default" || f == "d") return v.defined() ? v : args.empty() ? Value::of("") : args[0];
  if (f == "replace" && args.size() == 2) return Value::of(replace(need_string(), args[0].str(), args[1].str()));
  if (f == "int") {
    if (v.is_number()) return Value::of(v.number());
    try {
      return Value::of(std::int64_t(std::stoll(v.str())));
    } catch (const std::exception&) {
      return Value::of(std::int64_t(0));
    }
  }
  if (f == "length" || f == "count") {
    if (v.kind == Value::Kind::string) return Value::of(std::int64_t(text::code_points(v.string)));
    if (v.kind == Value::Kind::list) return Value::of(std::int64_t(v.list->size()));
    if (v.kind == Value::Kind::map) return Value::of(std::int64_t(v.map->size()));
  }
  if (v.kind == Value::Kind::list) {
    const Value::List& l = *v.list;
    if (f == "first") return l.empty() ? Value{} : l.front();
    if (f == "last") return l.empty() ? Value{} : l.back();
    if (f == "list") return v;
    if (f == "reverse") return Value::of(Value::List(l.rbegin(), l.rend()));
    if (f == "join") {
      std::string s;
      for (std::size_t i = 0; i < l.size(); ++i) s += (i ? (args.empty() ? "" : args[0].str()) : "") + l[i].str();
      return Value::of(std::move(s));
    }
  }
  if (f == "items" && v.kind == Value::Kind::map) {
    Value::List items;
    for (const auto& [k, x] : *v.map) items.push_back(Value::of(Value::List{Value::of(k), x}));
    return Value::of(std::move(items));
  }
  detail::fail(ErrorCode::unsupported, line,
               moe::detail::cat("the filter ", f, " of a ", v.type_name(), " is not supported"));
}
/// `v is t(args)`.
inline bool test(const Value& v, const std::string& t, const std::vector<Value>& args, int line) {
  using K = Value::Kind;
  if (t == "defined") return v.defined();
  if (t == "undefined") return !v.defined();
  if (t == "none") return v.kind == K::none;
  if (t == "string") return v.kind == K::string;
  if (t == "number" || t == "integer") return v.kind == K::integer;
  if (t == "boolean") return v.kind == K::boolean;
  if (t == "true") return v.kind == K::boolean && v.boolean;
  if (t == "false") return v.kind == K::boolean && !v.boolean;
  if (t == "mapping") return v.kind == K::map;
  if (t == "sequence" || t == "iterable") return v.kind == K::list || v.kind == K::string || v.kind == K::map;
  if (t == "even" || t == "odd") {
    if (!v.is_number())
      detail::fail(ErrorCode::invalid_argument, line, moe::detail::cat("'is ", t, "' of a ", v.type_name()));
    return (v.number() % 2 == 0) == (t == "even");
  }
  if ((t == "eq" || t == "equalto" || t == "sameas") && args.size() == 1) return equal(v, args[0]);
  detail::fail(ErrorCode::unsupported, line, moe::detail::cat("the test 'is ", t, "' is not supported"));
}
}  // namespace moe::text::jinja::builtins
