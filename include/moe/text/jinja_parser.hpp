#pragma once
/// \file jinja_parser.hpp
/// A chat template's tokens as trees (text::jinja::Template's second
/// step): expressions by recursive descent in Jinja's precedence (`or`,
/// `and`, `not`, comparisons and `in`, `~`, `+ -`, `* / // %`, signs, then
/// filters `|` and tests `is` binding tightest after calls, attributes and
/// subscripts), and the statements (if, for, set) as nested bodies.

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/text/jinja_lexer.hpp"
#include "moe/text/jinja_value.hpp"

namespace moe::text::jinja::detail {

// ---------------------------------------------------------------------------
// Expression trees.
// ---------------------------------------------------------------------------

struct Expr {
  enum class Kind { literal, name, list, map, attribute, subscript, slice, call, filter, test, unary, binary, ternary };
  Kind kind;
  std::string name;                         ///< a name, attribute, operator, filter or test
  Value value;                              ///< a literal
  std::vector<std::unique_ptr<Expr>> args;  ///< operands: object first, then arguments
  std::vector<std::string> keys;            ///< map literal keys; keyword argument names ("" for positional)
  bool negated = false;                     ///< `is not`
};
using ExprPtr = std::unique_ptr<Expr>;

inline ExprPtr make(Expr::Kind k, std::string name = {}) {
  auto e = std::make_unique<Expr>();
  e->kind = k;
  e->name = std::move(name);
  return e;
}

/// Recursive descent over one tag's tokens, by Jinja's precedence.
class Parser {
 public:
  Parser(std::vector<Token> t, int line, int max_depth) : t_(std::move(t)), line_(line), max_depth_(max_depth) {}

  ExprPtr expression() {
    if (++depth_ > max_depth_)
      fail(ErrorCode::invalid_argument, line_, moe::detail::cat("expressions nested deeper than ", max_depth_));
    ExprPtr e = or_();
    --depth_;
    if (word("if")) {
      auto t = make(Expr::Kind::ternary);
      auto cond = or_();
      ExprPtr other = word("else") ? expression() : make(Expr::Kind::literal);
      t->args.push_back(std::move(e));
      t->args.push_back(std::move(cond));
      t->args.push_back(std::move(other));
      return t;
    }
    return e;
  }

  /// An expression without `x if c else y` at its top (a loop's iterable,
  /// which an `if` after it filters instead).
  ExprPtr without_ternary() { return or_(); }

  bool word(std::string_view w) {
    if (t_[at_].kind == Token::Kind::name && t_[at_].text == w) return ++at_, true;
    return false;
  }
  bool op(std::string_view o) {
    if (t_[at_].kind == Token::Kind::op && t_[at_].text == o) return ++at_, true;
    return false;
  }
  void expect(std::string_view o) {
    if (!op(o)) fail(ErrorCode::invalid_argument, line_, moe::detail::cat("expected '", o, "', found '", here(), "'"));
  }
  std::string name() {
    if (t_[at_].kind != Token::Kind::name)
      fail(ErrorCode::invalid_argument, line_, moe::detail::cat("expected a name, found '", here(), "'"));
    return t_[at_++].text;
  }
  bool done() const { return t_[at_].kind == Token::Kind::end; }
  std::string here() const { return t_[at_].kind == Token::Kind::end ? "end of tag" : t_[at_].text; }
  void finish() {
    if (!done()) fail(ErrorCode::invalid_argument, line_, moe::detail::cat("unexpected '", here(), "'"));
  }

 private:
  ExprPtr binary(std::string op, ExprPtr a, ExprPtr b) {
    auto e = make(Expr::Kind::binary, std::move(op));
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }
  ExprPtr or_() {
    ExprPtr e = and_();
    while (word("or")) e = binary("or", std::move(e), and_());
    return e;
  }
  ExprPtr and_() {
    ExprPtr e = not_();
    while (word("and")) e = binary("and", std::move(e), not_());
    return e;
  }
  ExprPtr not_() {
    if (++not_run_ > max_depth_)
      fail(ErrorCode::invalid_argument, line_, moe::detail::cat("more than ", max_depth_, " 'not' in a row"));
    if (word("not")) {
      auto e = make(Expr::Kind::unary, "not");
      e->args.push_back(not_());
      return e;
    }
    not_run_ = 0;
    return compare();
  }
  ExprPtr compare() {
    ExprPtr e = concat();
    for (;;) {
      std::string o;
      for (std::string_view c : {"==", "!=", "<=", ">=", "<", ">"})
        if (o.empty() && op(c)) o = c;
      if (o.empty() && word("in")) o = "in";
      if (o.empty() && at_ + 1 < t_.size() && t_[at_].text == "not" && t_[at_ + 1].text == "in") at_ += 2, o = "not in";
      if (o.empty()) return e;
      e = binary(o, std::move(e), concat());
    }
  }
  ExprPtr concat() {
    ExprPtr e = sum();
    while (op("~")) e = binary("~", std::move(e), sum());
    return e;
  }
  ExprPtr sum() {
    ExprPtr e = product();
    for (;;) {
      if (op("+"))
        e = binary("+", std::move(e), product());
      else if (op("-"))
        e = binary("-", std::move(e), product());
      else
        return e;
    }
  }
  ExprPtr product() {
    ExprPtr e = unary();
    for (;;) {
      std::string o;
      for (std::string_view c : {"//", "*", "/", "%"})
        if (o.empty() && op(c)) o = c;
      if (o.empty()) return e;
      e = binary(o, std::move(e), unary());
    }
  }
  ExprPtr unary() {
    if (at_ > 0 && ++unary_run_ > max_depth_)
      fail(ErrorCode::invalid_argument, line_, moe::detail::cat("more than ", max_depth_, " signs in a row"));
    if (op("-")) {
      auto e = make(Expr::Kind::unary, "-");
      e->args.push_back(unary());
      return e;
    }
    if (op("+")) return unary();
    unary_run_ = 0;
    return filtered(postfix(primary()));
  }
  ExprPtr primary() {
    const Token& t = t_[at_];
    if (t.kind == Token::Kind::string || t.kind == Token::Kind::integer) {
      ++at_;
      auto e = make(Expr::Kind::literal);
      e->value = t.kind == Token::Kind::string ? Value::of(t.text) : Value::of(t.integer);
      // Adjacent string literals join, as in Python.
      while (e->value.kind == Value::Kind::string && t_[at_].kind == Token::Kind::string)
        e->value.string += t_[at_++].text;
      return e;
    }
    if (t.kind == Token::Kind::name) {
      ++at_;
      auto e = make(Expr::Kind::literal);
      if (t.text == "true" || t.text == "True")
        e->value = Value::of(true);
      else if (t.text == "false" || t.text == "False")
        e->value = Value::of(false);
      else if (t.text == "none" || t.text == "None")
        e->value = Value::none();
      else
        e = make(Expr::Kind::name, t.text);
      return e;
    }
    if (op("(")) {
      ExprPtr e = expression();
      if (op(",")) fail(ErrorCode::unsupported, line_, "tuples are not supported");
      expect(")");
      return e;
    }
    if (op("[")) {
      auto e = make(Expr::Kind::list);
      while (!op("]")) {
        e->args.push_back(expression());
        if (!op(",")) {
          expect("]");
          break;
        }
      }
      return e;
    }
    if (op("{")) {
      auto e = make(Expr::Kind::map);
      while (!op("}")) {
        ExprPtr key = expression();
        if (key->kind != Expr::Kind::literal || key->value.kind != Value::Kind::string)
          fail(ErrorCode::unsupported, line_, "map literal keys must be strings");
        expect(":");
        e->keys.push_back(key->value.string);
        e->args.push_back(expression());
        if (!op(",")) {
          expect("}");
          break;
        }
      }
      return e;
    }
    fail(ErrorCode::invalid_argument, line_, moe::detail::cat("expected a value, found '", here(), "'"));
  }
  /// Call arguments after '(' up to ')', into e->args / e->keys.
  void arguments(Expr& e) {
    while (!op(")")) {
      std::string key;
      if (t_[at_].kind == Token::Kind::name && at_ + 1 < t_.size() && t_[at_ + 1].kind == Token::Kind::op &&
          t_[at_ + 1].text == "=")
        key = t_[at_].text, at_ += 2;
      e.keys.push_back(key);
      e.args.push_back(expression());
      if (!op(",")) {
        expect(")");
        break;
      }
    }
  }
  ExprPtr postfix(ExprPtr e) {
    for (;;) {
      if (op(".")) {
        auto a = make(Expr::Kind::attribute, name());
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (op("[")) {
        // a[i] or a[i:j:k] (each part optional)
        ExprPtr parts[3];
        int colons = 0;
        while (!op("]")) {
          if (op(":")) {
            if (++colons > 2) fail(ErrorCode::invalid_argument, line_, "a slice has at most two ':'");
            continue;
          }
          if (parts[colons]) fail(ErrorCode::invalid_argument, line_, "expected ':' or ']' in a subscript");
          parts[colons] = expression();
        }
        auto s = make(colons ? Expr::Kind::slice : Expr::Kind::subscript);
        s->args.push_back(std::move(e));
        for (auto& p : parts) s->args.push_back(p ? std::move(p) : make(Expr::Kind::literal));
        if (!colons && s->args[1]->kind == Expr::Kind::literal && !s->args[1]->value.defined())
          fail(ErrorCode::invalid_argument, line_, "an empty subscript");
        e = std::move(s);
      } else if (op("(")) {
        auto c = make(Expr::Kind::call);
        c->args.push_back(std::move(e));
        c->keys.push_back("");
        arguments(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }
  ExprPtr filtered(ExprPtr e) {
    for (;;) {
      if (op("|")) {
        auto f = make(Expr::Kind::filter, name());
        f->args.push_back(std::move(e));
        f->keys.push_back("");
        if (op("(")) arguments(*f);
        e = std::move(f);
      } else if (word("is")) {
        auto t = make(Expr::Kind::test);
        t->negated = word("not");
        t->name = name();
        t->args.push_back(std::move(e));
        t->keys.push_back("");
        if (op("(")) arguments(*t);
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  std::size_t at_ = 0;
  int line_, max_depth_, depth_ = 0, unary_run_ = 0, not_run_ = 0;
};

// ---------------------------------------------------------------------------
// Statements.
// ---------------------------------------------------------------------------

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind { text, output, if_, for_, set } kind;
  int line = 0;
  std::string text;                                ///< text; the loop or set variable
  std::vector<std::string> names;                  ///< for a, b in …: the names unpacked
  std::vector<std::pair<ExprPtr, Body>> branches;  ///< if/elif conditions and bodies; for: {iterable, body}
  ExprPtr expr;                                    ///< output, set; for: the `if` filter
  Body otherwise;                                  ///< else
};

/// Segments [at, …) into a body, up to a statement whose keyword is in
/// `until` (returned in `stop`, its parser left after the keyword).
inline Body parse_body(const std::vector<Segment>& seg, std::size_t& at, std::initializer_list<std::string_view> until,
                       std::string& stop, std::unique_ptr<Parser>& stop_parser, const Options& opt, int depth = 0) {
  Body body;
  if (depth > opt.max_depth)
    fail(ErrorCode::invalid_argument, seg[at].line, moe::detail::cat("blocks nested deeper than ", opt.max_depth));
  for (; at < seg.size(); ++at) {
    const Segment& s = seg[at];
    if (s.kind == Segment::Kind::text) {
      body.push_back({Node::Kind::text, s.line, s.body, {}, {}, nullptr, {}});
      continue;
    }
    auto p = std::make_unique<Parser>(tokens(s.body, s.line), s.line, opt.max_depth);
    if (s.kind == Segment::Kind::expression) {
      Node n{Node::Kind::output, s.line, {}, {}, {}, p->expression(), {}};
      p->finish();
      body.push_back(std::move(n));
      continue;
    }
    if (p->done()) fail(ErrorCode::invalid_argument, s.line, "an empty {% %} tag");
    const std::string keyword = p->name();
    if (std::find(until.begin(), until.end(), keyword) != until.end()) {
      stop = keyword;
      stop_parser = std::move(p);
      return body;
    }
    if (keyword == "if") {
      Node n{Node::Kind::if_, s.line, {}, {}, {}, nullptr, {}};
      ExprPtr cond = p->expression();
      p->finish();
      for (;;) {
        std::string end;
        std::unique_ptr<Parser> next;
        ++at;
        Body b = parse_body(seg, at, {"elif", "else", "endif"}, end, next, opt, depth + 1);
        n.branches.emplace_back(std::move(cond), std::move(b));
        if (end.empty()) fail(ErrorCode::invalid_argument, s.line, "{% if %} without {% endif %}");
        if (end == "elif") {
          cond = next->expression();
          next->finish();
          continue;
        }
        if (end == "else") {
          next->finish();
          ++at;
          n.otherwise = parse_body(seg, at, {"endif"}, end, next, opt, depth + 1);
          if (end.empty()) fail(ErrorCode::invalid_argument, s.line, "{% if %} without {% endif %}");
        }
        next->finish();
        break;
      }
      body.push_back(std::move(n));
    } else if (keyword == "for") {
      Node n{Node::Kind::for_, s.line, {}, {}, {}, nullptr, {}};
      n.names.push_back(p->name());
      while (p->op(",")) n.names.push_back(p->name());
      if (!p->word("in")) fail(ErrorCode::invalid_argument, s.line, "expected 'in' in {% for %}");
      ExprPtr iterable = p->without_ternary();
      if (p->word("if")) n.expr = p->expression();
      if (p->word("recursive")) fail(ErrorCode::unsupported, s.line, "recursive loops are not supported");
      p->finish();
      std::string end;
      std::unique_ptr<Parser> next;
      ++at;
      Body b = parse_body(seg, at, {"else", "endfor"}, end, next, opt, depth + 1);
      if (end.empty()) fail(ErrorCode::invalid_argument, s.line, "{% for %} without {% endfor %}");
      if (end == "else") {
        next->finish();
        ++at;
        n.otherwise = parse_body(seg, at, {"endfor"}, end, next, opt, depth + 1);
        if (end.empty()) fail(ErrorCode::invalid_argument, s.line, "{% for %} without {% endfor %}");
      }
      next->finish();
      n.branches.emplace_back(std::move(iterable), std::move(b));
      body.push_back(std::move(n));
    } else if (keyword == "set") {
      Node n{Node::Kind::set, s.line, p->name(), {}, {}, nullptr, {}};
      if (p->op(".")) fail(ErrorCode::unsupported, s.line, "assigning to an attribute (namespace) is not supported");
      if (p->op(",")) fail(ErrorCode::unsupported, s.line, "tuple assignment in {% set %} is not supported");
      if (!p->op("=")) fail(ErrorCode::unsupported, s.line, "{% set %} blocks are not supported");
      n.expr = p->expression();
      p->finish();
      body.push_back(std::move(n));
    } else {
      fail(ErrorCode::unsupported, s.line, moe::detail::cat("the statement {% ", keyword, " %} is not supported"));
    }
  }
  return body;
}

}  // namespace moe::text::jinja::detail
