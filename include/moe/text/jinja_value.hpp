#pragma once
/// \file jinja_value.hpp
/// The values a chat template computes with (text::jinja::Template), and
/// the Python semantics Jinja gives them: what is true, what is equal, how
/// a value prints. A chat template is Python-flavoured Jinja run by
/// transformers, so `True == 1`, `'a' != false`, None prints as "None" and
/// an undefined name prints as nothing.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/core/error.hpp"

namespace moe::text::jinja {

/// A template value: undefined (a name or key that does not exist), none,
/// a bool, an integer, a string, a list or a map (keys in insertion order,
/// as a JSON object or a Python dict keeps them). Lists and maps are shared,
/// never modified after they are built: templates cannot change them.
struct Value {
  enum class Kind { undefined, none, boolean, integer, string, list, map };
  using List = std::vector<Value>;
  using Map = std::vector<std::pair<std::string, Value>>;

  Kind kind = Kind::undefined;
  bool boolean = false;
  std::int64_t integer = 0;
  std::string string;
  std::shared_ptr<const List> list;
  std::shared_ptr<const Map> map;

  static Value none() { return with_kind(Kind::none); }
  static Value of(bool b) {
    Value v = with_kind(Kind::boolean);
    v.boolean = b;
    return v;
  }
  static Value of(std::int64_t i) {
    Value v = with_kind(Kind::integer);
    v.integer = i;
    return v;
  }
  static Value of(std::string s) {
    Value v = with_kind(Kind::string);
    v.string = std::move(s);
    return v;
  }
  static Value of(const char* s) { return of(std::string(s)); }
  static Value of(List items) {
    Value v = with_kind(Kind::list);
    v.list = std::make_shared<const List>(std::move(items));
    return v;
  }
  static Value of(Map entries) {
    Value v = with_kind(Kind::map);
    v.map = std::make_shared<const Map>(std::move(entries));
    return v;
  }

  /// A JSON document as a value (what chat messages arrive as). Floats are
  /// refused: no chat template this renderer serves computes with them.
  static Value from_json(const nlohmann::json& j) {
    switch (j.type()) {
      case nlohmann::json::value_t::null:
        return none();
      case nlohmann::json::value_t::boolean:
        return of(j.get<bool>());
      case nlohmann::json::value_t::number_integer:
      case nlohmann::json::value_t::number_unsigned:
        return of(j.get<std::int64_t>());
      case nlohmann::json::value_t::string:
        return of(j.get<std::string>());
      case nlohmann::json::value_t::array: {
        List items;
        for (const auto& e : j) items.push_back(from_json(e));
        return of(std::move(items));
      }
      case nlohmann::json::value_t::object: {
        Map entries;
        for (const auto& [k, e] : j.items()) entries.emplace_back(k, from_json(e));
        return of(std::move(entries));
      }
      default:
        throw Error(ErrorCode::unsupported, moe::detail::cat("chat template data: a JSON ", j.type_name(),
                                                             " (only null, bool, integer, string, array, object)"));
    }
  }

  bool defined() const noexcept { return kind != Kind::undefined; }
  bool is_number() const noexcept { return kind == Kind::integer || kind == Kind::boolean; }
  std::int64_t number() const noexcept { return kind == Kind::boolean ? std::int64_t(boolean) : integer; }

  /// The entry under `key` of a map, or undefined.
  Value at(std::string_view key) const {
    if (kind == Kind::map)
      for (const auto& [k, v] : *map)
        if (k == key) return v;
    return Value{};
  }

  /// Python's truth: empty, zero, None and undefined are false.
  bool truthy() const noexcept {
    switch (kind) {
      case Kind::undefined:
      case Kind::none:
        return false;
      case Kind::boolean:
        return boolean;
      case Kind::integer:
        return integer != 0;
      case Kind::string:
        return !string.empty();
      case Kind::list:
        return !list->empty();
      case Kind::map:
        return !map->empty();
    }
    return false;
  }

  /// The name of the kind, as an error message says it.
  std::string_view type_name() const noexcept {
    constexpr std::string_view names[] = {"undefined", "none", "bool", "int", "string", "list", "map"};
    return names[int(kind)];
  }

  /// What `{{ value }}` prints: Python's str().
  std::string str() const {
    switch (kind) {
      case Kind::undefined:
        return "";
      case Kind::string:
        return string;
      default:
        return repr();
    }
  }

  /// Python's repr(): strings quoted, lists and maps as Python prints them.
  std::string repr() const {
    switch (kind) {
      case Kind::undefined:
        return "";
      case Kind::none:
        return "None";
      case Kind::boolean:
        return boolean ? "True" : "False";
      case Kind::integer:
        return std::to_string(integer);
      case Kind::string:
        return quoted(string);
      case Kind::list: {
        std::string s = "[";
        for (std::size_t i = 0; i < list->size(); ++i) s += (i ? ", " : "") + (*list)[i].repr();
        return s + "]";
      }
      case Kind::map: {
        std::string s = "{";
        for (std::size_t i = 0; i < map->size(); ++i)
          s += (i ? ", " : "") + quoted((*map)[i].first) + ": " + (*map)[i].second.repr();
        return s + "}";
      }
    }
    return "";
  }

 private:
  static Value with_kind(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
  static std::string quoted(const std::string& s) {
    // Python quotes with ' unless the text holds one and no ".
    const char q = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, q);
    for (char c : s) {
      if (c == q || c == '\\') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out + q;
  }
};

/// Python's ==: numbers (bools are integers) by value, strings by text,
/// lists and maps element by element, None only to None; anything else
/// differs (so a string is never equal to false).
inline bool equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) return a.number() == b.number();
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::undefined:
    case K::none:
      return true;
    case K::string:
      return a.string == b.string;
    case K::list:
      if (a.list->size() != b.list->size()) return false;
      for (std::size_t i = 0; i < a.list->size(); ++i)
        if (!equal((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case K::map:
      if (a.map->size() != b.map->size()) return false;
      for (const auto& [k, v] : *a.map)
        if (!equal(v, b.at(k))) return false;
      return true;
    default:
      return false;
  }
}

}  // namespace moe::text::jinja
