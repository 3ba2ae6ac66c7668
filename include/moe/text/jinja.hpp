#pragma once
/// \file jinja.hpp
/// A renderer for the Jinja that chat templates are written in: the
/// `chat_template` a model's tokenizer_config.json (or a GGUF's
/// `tokenizer.chat_template`) holds, which turns a list of messages into
/// the prompt text the model was trained on. No C++ Jinja engine is
/// packaged where the library's dependencies come from, so this is the
/// subset chat templates use, rendered as transformers renders it
/// (apply_chat_template: jinja2 with trim_blocks and lstrip_blocks), and
/// a clear moe::Error for anything outside it.
///
///   text     {{ expr }}  {% if %}/{% elif %}/{% else %}/{% endif %}
///            {% for x in xs [if cond] %} … {% else %} … {% endfor %} (loop.index0,
///            index, first, last, length, revindex, revindex0, previtem, nextitem)
///            {% set name = expr %}  {# comments #}  whitespace control {%- -%} {{- -}}
///   expr     literals ('…', "…", 12, true/True, false/False, none/None, [..], {..}),
///            names, a.b, a['b'], a[i], a[i:j:k], calls, x if c else y,
///            or and not, == != < > <= >= in, not in, + - * / // % ~,
///            filters (| trim, length, upper, lower, title, capitalize, string,
///            first, last, join, default, replace, int, list, reverse, items),
///            tests (is [not] defined, none, string, number, mapping, sequence,
///            iterable, true, false, even, odd),
///            string methods (strip, lstrip, rstrip, upper, lower, title,
///            capitalize, startswith, endswith, split, replace),
///            map methods (get, items, keys, values),
///            raise_exception(msg) and range(…)
///
/// Not supported, refused with an error naming the construct: macros,
/// call blocks, namespace(), tuple assignment in set, set blocks,
/// filter blocks, includes, float literals, break/continue.

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/text/jinja_builtins.hpp"
#include "moe/text/jinja_lexer.hpp"
#include "moe/text/jinja_parser.hpp"
#include "moe/text/jinja_value.hpp"

namespace moe::text::jinja {

/// A parsed chat template, rendered with the variables a chat template
/// expects (messages, bos_token, eos_token, add_generation_prompt, …) into
/// the prompt text:
///
///   const jinja::Template t(config["chat_template"].get<std::string>());
///   std::string prompt = t.render({{"messages", jinja::Value::from_json(messages)},
///                                  {"bos_token", jinja::Value::of("<s>")},
///                                  {"add_generation_prompt", jinja::Value::of(true)}});
///
/// Parsing checks the syntax; rendering evaluates, and a template's own
/// raise_exception (a refused conversation) is a moe::Error with its message.
class Template {
 public:
  explicit Template(std::string_view source, Options options = {}) : opt_(options) {
    const std::vector<detail::Segment> seg = detail::segments(source, options);
    std::size_t at = 0;
    std::string stop;
    std::unique_ptr<detail::Parser> p;
    body_ = std::make_shared<const detail::Body>(
        detail::parse_body(seg, at, {"endif", "endfor", "elif", "else"}, stop, p, opt_));
    if (!stop.empty())
      detail::fail(ErrorCode::invalid_argument, seg[at].line,
                   moe::detail::cat("{% ", stop, " %} without its opening tag"));
  }

  /// The text, with `variables` as the template's global names.
  std::string render(const Value::Map& variables) const {
    Scope scope(1);
    for (const auto& [name, value] : variables) scope[0][name] = value;
    std::string out;
    run(*body_, scope, out);
    return out;
  }

 private:
  /// The names in reach, innermost last, and the work done so far.
  struct Scope : std::vector<std::map<std::string, Value, std::less<>>> {
    using vector::vector;
    std::int64_t steps = 0;
  };

  /// Counts one step of work, and checks a text's size, against Options.
  void spend(Scope& scope, int line, std::size_t text = 0) const {
    if (++scope.steps > opt_.max_steps)
      detail::fail(ErrorCode::invalid_argument, line,
                   moe::detail::cat("the template runs more than ", opt_.max_steps, " steps"));
    if (text > opt_.max_text)
      detail::fail(ErrorCode::invalid_argument, line,
                   moe::detail::cat("the template makes a text over ", opt_.max_text, " bytes"));
  }

  static Value lookup(const Scope& scope, std::string_view name) {
    for (auto s = scope.rbegin(); s != scope.rend(); ++s)
      if (auto it = s->find(name); it != s->end()) return it->second;
    return Value{};
  }

  void run(const detail::Body& body, Scope& scope, std::string& out) const {
    for (const detail::Node& n : body) {
      spend(scope, n.line, out.size());
      switch (n.kind) {
        case detail::Node::Kind::text:
          out += n.text;
          break;
        case detail::Node::Kind::output:
          out += eval(*n.expr, scope, n.line).str();
          break;
        case detail::Node::Kind::set:
          scope.back()[n.text] = eval(*n.expr, scope, n.line);
          break;
        case detail::Node::Kind::if_: {
          bool taken = false;
          for (const auto& [cond, b] : n.branches)
            if (eval(*cond, scope, n.line).truthy()) {
              run(b, scope, out);
              taken = true;
              break;
            }
          if (!taken) run(n.otherwise, scope, out);
          break;
        }
        case detail::Node::Kind::for_:
          loop(n, scope, out);
          break;
      }
    }
  }

  void loop(const detail::Node& n, Scope& scope, std::string& out) const {
    const Value seq = eval(*n.branches[0].first, scope, n.line);
    Value::List items;
    if (seq.kind == Value::Kind::list)
      items = *seq.list;
    else if (seq.kind == Value::Kind::map)
      for (const auto& e : *seq.map) items.push_back(Value::of(e.first));
    else if (seq.kind == Value::Kind::string)
      for (char c : seq.string) items.push_back(Value::of(std::string(1, c)));
    else if (seq.defined())
      detail::fail(ErrorCode::invalid_argument, n.line, moe::detail::cat("cannot loop over a ", seq.type_name()));
    const auto bind = [&](std::map<std::string, Value, std::less<>>& frame, const Value& item) {
      if (n.names.size() == 1) {
        frame[n.names[0]] = item;
        return;
      }
      if (item.kind != Value::Kind::list || item.list->size() != n.names.size())
        detail::fail(ErrorCode::invalid_argument, n.line,
                     moe::detail::cat("cannot unpack a ", item.type_name(), " into ", n.names.size(), " names"));
      for (std::size_t i = 0; i < n.names.size(); ++i) frame[n.names[i]] = (*item.list)[i];
    };
    if (n.expr) {  // {% for x in xs if cond %}: the filter sees only the item
      Value::List kept;
      for (const Value& item : items) {
        scope.emplace_back();
        bind(scope.back(), item);
        const bool keep = eval(*n.expr, scope, n.line).truthy();
        scope.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const auto length = std::int64_t(items.size());
    for (std::int64_t i = 0; i < length; ++i) {
      scope.emplace_back();  // names set in the body stay in the body
      bind(scope.back(), items[std::size_t(i)]);
      scope.back()["loop"] = Value::of(Value::Map{
          {"index0", Value::of(i)},
          {"index", Value::of(i + 1)},
          {"revindex0", Value::of(length - 1 - i)},
          {"revindex", Value::of(length - i)},
          {"first", Value::of(i == 0)},
          {"last", Value::of(i + 1 == length)},
          {"length", Value::of(length)},
          {"previtem", i > 0 ? items[std::size_t(i - 1)] : Value{}},
          {"nextitem", i + 1 < length ? items[std::size_t(i + 1)] : Value{}},
      });
      run(n.branches[0].second, scope, out);
      scope.pop_back();
    }
    if (length == 0) run(n.otherwise, scope, out);
  }

  Value eval(const detail::Expr& e, Scope& scope, int line) const {
    using K = detail::Expr::Kind;
    spend(scope, line);
    const auto need = [&](bool ok, const std::string& what) {
      if (!ok) detail::fail(ErrorCode::invalid_argument, line, what);
    };
    switch (e.kind) {
      case K::literal:
        return e.value;
      case K::name:
        return lookup(scope, e.name);
      case K::list: {
        Value::List items;
        for (const auto& a : e.args) items.push_back(eval(*a, scope, line));
        return Value::of(std::move(items));
      }
      case K::map: {
        Value::Map entries;
        for (std::size_t i = 0; i < e.args.size(); ++i) entries.emplace_back(e.keys[i], eval(*e.args[i], scope, line));
        return Value::of(std::move(entries));
      }
      case K::attribute: {
        const Value obj = eval(*e.args[0], scope, line);
        need(obj.defined(), moe::detail::cat("'", e.name, "' of an undefined value"));
        return obj.at(e.name);  // a.b reads a map's key b (methods are calls)
      }
      case K::subscript: {
        const Value obj = eval(*e.args[0], scope, line), key = eval(*e.args[1], scope, line);
        need(obj.defined(), "a subscript of an undefined value");
        if (obj.kind == Value::Kind::map && key.kind == Value::Kind::string) return obj.at(key.string);
        if ((obj.kind == Value::Kind::list || obj.kind == Value::Kind::string) && key.is_number()) {
          const auto size = std::int64_t(obj.kind == Value::Kind::list ? obj.list->size() : obj.string.size());
          std::int64_t i = key.number();
          if (i < 0) i += size;
          if (i < 0 || i >= size) return Value{};  // jinja2: undefined
          return obj.kind == Value::Kind::list ? (*obj.list)[std::size_t(i)]
                                               : Value::of(std::string(1, obj.string[std::size_t(i)]));
        }
        need(false, moe::detail::cat("cannot subscript a ", obj.type_name(), " with a ", key.type_name()));
        return Value{};
      }
      case K::slice:
        return slice(eval(*e.args[0], scope, line), eval(*e.args[1], scope, line), eval(*e.args[2], scope, line),
                     eval(*e.args[3], scope, line), line);
      case K::ternary:
        return eval(*e.args[1], scope, line).truthy() ? eval(*e.args[0], scope, line) : eval(*e.args[2], scope, line);
      case K::unary: {
        const Value v = eval(*e.args[0], scope, line);
        if (e.name == "not") return Value::of(!v.truthy());
        need(v.is_number(), moe::detail::cat("'-' of a ", v.type_name()));
        return Value::of(builtins::arithmetic('-', 0, v.number(), line));
      }
      case K::binary:
        return binary(e, scope, line);
      case K::call:
        return call(e, scope, line);
      case K::filter:
        return filter(e, scope, line);
      case K::test:
        return Value::of(test(e, scope, line) != e.negated);
    }
    return Value{};
  }

  Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step, int line) const {
    const bool list = obj.kind == Value::Kind::list;
    if (!list && obj.kind != Value::Kind::string)
      detail::fail(ErrorCode::invalid_argument, line, moe::detail::cat("cannot slice a ", obj.type_name()));
    const auto n = std::int64_t(list ? obj.list->size() : obj.string.size());
    // A step longer than the sequence takes one item, as n + 1 does (and
    // keeps i + s from overflowing).
    const std::int64_t s =
        std::clamp<std::int64_t>(step.defined() && step.kind != Value::Kind::none ? step.number() : 1, -(n + 1), n + 1);
    if (s == 0) detail::fail(ErrorCode::invalid_argument, line, "a slice step of zero");
    // Python's slice.indices().
    const auto bound = [&](const Value& v, std::int64_t fallback) {
      if (!v.defined() || v.kind == Value::Kind::none) return fallback;
      if (!v.is_number())
        detail::fail(ErrorCode::invalid_argument, line, moe::detail::cat("a slice bound that is a ", v.type_name()));
      std::int64_t i = v.number();
      if (i < 0) i += n;
      return s > 0 ? std::clamp<std::int64_t>(i, 0, n) : std::clamp<std::int64_t>(i, -1, n - 1);
    };
    const std::int64_t b = bound(start, s > 0 ? 0 : n - 1), end = bound(stop, s > 0 ? n : -1);
    Value::List items;
    std::string text;
    for (std::int64_t i = b; s > 0 ? i < end : i > end; i += s) {
      if (list)
        items.push_back((*obj.list)[std::size_t(i)]);
      else
        text += obj.string[std::size_t(i)];
    }
    return list ? Value::of(std::move(items)) : Value::of(std::move(text));
  }

  Value binary(const detail::Expr& e, Scope& scope, int line) const {
    const std::string& o = e.name;
    if (o == "and") {
      const Value a = eval(*e.args[0], scope, line);
      return a.truthy() ? eval(*e.args[1], scope, line) : a;
    }
    if (o == "or") {
      const Value a = eval(*e.args[0], scope, line);
      return a.truthy() ? a : eval(*e.args[1], scope, line);
    }
    const Value a = eval(*e.args[0], scope, line), b = eval(*e.args[1], scope, line);
    const auto bad = [&]() -> Value {
      detail::fail(ErrorCode::invalid_argument, line,
                   moe::detail::cat("'", o, "' between a ", a.type_name(), " and a ", b.type_name()));
    };
    if (o == "==") return Value::of(equal(a, b));
    if (o == "!=") return Value::of(!equal(a, b));
    if (o == "~") return sized(a.str() + b.str(), scope, line);
    if (o == "in" || o == "not in") {
      bool found = false;
      if (b.kind == Value::Kind::string && a.kind == Value::Kind::string)
        found = b.string.find(a.string) != std::string::npos;
      else if (b.kind == Value::Kind::list)
        found = std::any_of(b.list->begin(), b.list->end(), [&](const Value& v) { return equal(v, a); });
      else if (b.kind == Value::Kind::map)
        found = a.kind == Value::Kind::string && b.at(a.string).defined();
      else
        bad();
      return Value::of(found != (o == "not in"));
    }
    if (o == "<" || o == ">" || o == "<=" || o == ">=") {
      int c;
      if (a.is_number() && b.is_number())
        c = a.number() < b.number() ? -1 : a.number() > b.number();
      else if (a.kind == Value::Kind::string && b.kind == Value::Kind::string)
        c = a.string.compare(b.string);
      else
        return bad();
      return Value::of(o == "<" ? c < 0 : o == ">" ? c > 0 : o == "<=" ? c <= 0 : c >= 0);
    }
    if (o == "+") {
      if (a.is_number() && b.is_number()) return Value::of(builtins::arithmetic('+', a.number(), b.number(), line));
      if (a.kind == Value::Kind::string && b.kind == Value::Kind::string) {
        spend(scope, line, a.string.size() + b.string.size());
        return Value::of(a.string + b.string);
      }
      if (a.kind == Value::Kind::list && b.kind == Value::Kind::list) {
        spend(scope, line, a.list->size() + b.list->size());
        Value::List items = *a.list;
        items.insert(items.end(), b.list->begin(), b.list->end());
        return Value::of(std::move(items));
      }
      return bad();
    }
    if (o == "*" && a.kind == Value::Kind::string && b.is_number()) {
      spend(scope, line, a.string.size() * std::size_t(std::clamp<std::int64_t>(b.number(), 0, std::int64_t(1) << 32)));
      std::string s;
      for (std::int64_t i = 0; i < b.number(); ++i) s += a.string;
      return Value::of(std::move(s));
    }
    if (!a.is_number() || !b.is_number()) return bad();
    const std::int64_t x = a.number(), y = b.number();
    if (o == "-" || o == "*" || o == "%") return Value::of(builtins::arithmetic(o[0], x, y, line));
    if (o == "//") return Value::of(builtins::arithmetic('/', x, y, line));
    detail::fail(ErrorCode::unsupported, line, "'/' gives a float; floats are not supported (use //)");
  }

  /// Positional arguments of a call or filter (after its object), evaluated.
  std::vector<Value> positional(const detail::Expr& e, Scope& scope, int line, std::size_t first = 1) const {
    std::vector<Value> v;
    for (std::size_t i = first; i < e.args.size(); ++i) {
      if (!e.keys[i].empty())
        detail::fail(ErrorCode::unsupported, line,
                     moe::detail::cat("the keyword argument ", e.keys[i], "= is not supported"));
      v.push_back(eval(*e.args[i], scope, line));
    }
    return v;
  }

  Value call(const detail::Expr& e, Scope& scope, int line) const {
    const detail::Expr& callee = *e.args[0];
    const std::vector<Value> args = positional(e, scope, line);
    if (callee.kind == detail::Expr::Kind::name) {
      if (callee.name == "raise_exception")
        throw Error(ErrorCode::invalid_argument,
                    "chat template refuses the messages: " + (args.empty() ? "" : args[0].str()));
      if (callee.name == "range") {
        for (const Value& a : args)
          if (!a.is_number())
            detail::fail(ErrorCode::invalid_argument, line, moe::detail::cat("range() of a ", a.type_name()));
        std::int64_t b = 0, end = 0, step = 1;
        if (args.size() == 1) end = args[0].number();
        if (args.size() >= 2) b = args[0].number(), end = args[1].number();
        if (args.size() == 3) step = args[2].number();
        if (step == 0 || args.empty() || args.size() > 3)
          detail::fail(ErrorCode::invalid_argument, line, "range() takes 1 to 3 non-zero-step integers");
        Value::List items;
        for (std::int64_t i = b; step > 0 ? i < end : i > end; i += step) {
          spend(scope, line, items.size());
          items.push_back(Value::of(i));
          if (step > 0 ? i > INT64_MAX - step : i < INT64_MIN - step) break;  // the next would overflow
        }
        return Value::of(std::move(items));
      }
      detail::fail(ErrorCode::unsupported, line, moe::detail::cat("the function ", callee.name, "() is not supported"));
    }
    if (callee.kind != detail::Expr::Kind::attribute)
      detail::fail(ErrorCode::unsupported, line, "only functions and methods can be called");
    return builtins::method(eval(*callee.args[0], scope, line), callee.name, args, line);
  }

  Value filter(const detail::Expr& e, Scope& scope, int line) const {
    const Value v = eval(*e.args[0], scope, line);
    return builtins::filter(v, e.name, positional(e, scope, line), line);
  }

  bool test(const detail::Expr& e, Scope& scope, int line) const {
    const Value v = eval(*e.args[0], scope, line);
    return builtins::test(v, e.name, positional(e, scope, line), line);
  }

  Value sized(std::string s, Scope& scope, int line) const {
    spend(scope, line, s.size());
    return Value::of(std::move(s));
  }

  Options opt_;
  std::shared_ptr<const detail::Body> body_;  ///< shared by copies: never changed after parsing
};

}  // namespace moe::text::jinja
