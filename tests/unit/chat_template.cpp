// text::jinja: chat templates that models ship, rendered byte for byte as
// transformers' apply_chat_template renders them (tests/data/cases/chat,
// tests/cases/make_chat_cases.py), the Jinja semantics they lean on, and a
// clear error for what the subset does not support; text::ChatTemplate:
// where folders and GGUF files keep a template, and a turn's end marker.
#include <doctest/doctest.h>

#include <moe/io/gguf_writer.hpp>
#include <moe/text/chat.hpp>
#include <moe/text/jinja.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <unistd.h>

namespace fs = std::filesystem;
using moe::text::jinja::Template;
using moe::text::jinja::Value;

namespace {

nlohmann::json load(const std::string& file) {
  std::ifstream in(fs::path(MOE_TEST_DATA_DIR) / "cases" / "chat" / file);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

/// Renders a template alone, with optional variables.
std::string render(const std::string& source, Value::Map vars = {}) { return Template(source).render(vars); }

/// The moe::Error message of rendering (or parsing) a template; "" if none.
std::string error_of(const std::string& source, Value::Map vars = {}) {
  try {
    render(source, std::move(vars));
  } catch (const moe::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("chat templates render as transformers renders them") {
  const nlohmann::json templates = load("templates.json"), cases = load("renders.json");
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& t : templates["templates"]) by_name[t["name"].get<std::string>()] = t;
  REQUIRE(by_name.size() == 8);
  int rendered = 0, refused = 0;
  for (const auto& c : cases["renders"]) {
    const nlohmann::json& t = by_name.at(c["template"].get<std::string>());
    CAPTURE(c["template"].get<std::string>());
    CAPTURE(c["conversation"].get<std::string>());
    CAPTURE(c["add_generation_prompt"].get<bool>());
    const Template tmpl(t["template"].get<std::string>());
    const Value::Map vars{
        {"messages", Value::from_json(cases["conversations"][c["conversation"].get<std::string>()])},
        {"bos_token", Value::of(t["bos_token"].get<std::string>())},
        {"eos_token", Value::of(t["eos_token"].get<std::string>())},
        {"add_generation_prompt", Value::of(c["add_generation_prompt"].get<bool>())},
    };
    if (c.contains("error")) {
      // The template's own raise_exception: a moe::Error carrying its message.
      std::string message;
      try {
        tmpl.render(vars);
      } catch (const moe::Error& e) {
        message = e.what();
      }
      CHECK(message.find(c["error"].get<std::string>()) != std::string::npos);
      ++refused;
    } else {
      CHECK(tmpl.render(vars) == c["text"].get<std::string>());
      ++rendered;
    }
  }
  CHECK(rendered == 98);
  CHECK(refused == 14);
}

TEST_CASE("Jinja semantics the templates rely on") {
  // Python truth and equality: a string is never equal to false; True == 1.
  CHECK(render("{{ 'x' != false }} {{ true == 1 }} {{ none }} {{ undefined_name }}|") == "True True None |");
  // Scoping: a set inside a loop stays in the loop; one inside an if does not.
  CHECK(render("{% set a = 1 %}{% for i in [1, 2] %}{% set a = i %}{% endfor %}{{ a }}") == "1");
  CHECK(render("{% if true %}{% set a = 2 %}{% endif %}{{ a }}") == "2");
  // loop variables, slices, negative indices, filters, methods, tests.
  CHECK(render("{% for x in ['a', 'b', 'c'] %}{{ loop.index0 }}{{ x }}{{ '|' if not loop.last }}{% endfor %}") ==
        "0a|1b|2c");
  CHECK(render("{{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3][-1] }} {{ 'abcdef'[::-2] }} {{ [1, 2, 3][:-1] | length }}") ==
        "[2, 3, 4] 3 fdb 2");
  CHECK(render("{{ '  hi  ' | trim }}|{{ '  hi  '.strip() }}|{{ 'ab'.upper() }}|{{ 'user'.title() }}") ==
        "hi|hi|AB|User");
  CHECK(render("{{ x is defined }} {{ x is not defined }} {{ 3 is odd }} {{ -7 // 2 }} {{ -7 % 3 }}") ==
        "False True True -4 2");
  CHECK(render("{{ 'a' ~ 1 ~ none }} {{ 'ell' in 'hello' }} {{ 2 not in [1, 2] }}") == "a1None True False");
  CHECK(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}") == "a=1;b=2;");
  CHECK(render("{% for x in [] %}x{% else %}empty{% endfor %}") == "empty");
  CHECK(render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{% endfor %}") == "24");
  CHECK(render("{{ m.get('a', 'none') }}{{ m['b'] }}", {{"m", Value::from_json(nlohmann::json{{"b", "B"}})}}) ==
        "noneB");
}

TEST_CASE("whitespace as transformers' environment handles it") {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: the
  // indentation before a block tag that starts its line goes.
  CHECK(render("{% if true %}\n  x\n  {% endif %}\ny") == "  x\ny");
  CHECK(render("a  {% if true %}b{% endif %}") == "a  b");  // not at a line's start: kept
  // Explicit control: - strips every whitespace character on its side.
  CHECK(render("a \n {{- 'b' -}} \n c") == "abc");
  CHECK(render("a\n{%- if true %} b{% endif %}") == "a b");
  // An expression tag is not a block: the newline after it stays.
  CHECK(render("{{ 'a' }}\nb") == "a\nb");
  CHECK(render("{# a comment #}\nx") == "x");
}

TEST_CASE("what the subset does not support is a clear error") {
  CHECK(error_of("{% macro f() %}{% endmacro %}").find("statement {% macro %} is not supported") != std::string::npos);
  CHECK(error_of("{% set ns = namespace(a=1) %}").find("keyword argument a= is not supported") != std::string::npos);
  CHECK(error_of("{{ 1.5 }}").find("float literals are not supported") != std::string::npos);
  CHECK(error_of("{{ x | tojson }}").find("filter tojson") != std::string::npos);
  CHECK(error_of("{% if true %}x").find("without {% endif %}") != std::string::npos);
  CHECK(error_of("a\n{% endfor %}").find("line 2") != std::string::npos);
  CHECK(error_of("{{ 'abc }}").find("never closed") != std::string::npos);
  CHECK(error_of("{{ 1 + 'a' }}").find("'+' between a int and a string") != std::string::npos);
  CHECK(error_of("{{ raise_exception('no system role') }}").find("refuses the messages: no system role") !=
        std::string::npos);
}

TEST_CASE("a hostile template meets bounds, not a crash") {
  CHECK(error_of("{{ 9223372036854775807 + 1 }}").find("past 64 bits") != std::string::npos);
  CHECK(error_of("{{ 99999999999999999999 }}").find("past 64 bits") != std::string::npos);
  CHECK(error_of("{{ (-9223372036854775807 - 1) // -1 }}").find("past 64 bits") != std::string::npos);
  CHECK(error_of("{{ 1 // 0 }}").find("division by zero") != std::string::npos);
  CHECK(error_of("{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}").find("nested deeper") !=
        std::string::npos);
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "{% if true %}";
  CHECK(error_of(deep).find("blocks nested deeper") != std::string::npos);
  moe::text::jinja::Options small;
  small.max_steps = 1000;
  small.max_text = 100;
  const auto refusal = [&](const char* source) {
    try {
      Template(source, small).render({});
    } catch (const moe::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(refusal("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}")
            .find("more than 1000 steps") != std::string::npos);
  CHECK(refusal("{{ 'x' * 1000 }}").find("over 100 bytes") != std::string::npos);
  CHECK(refusal("{% for i in range(50) %}abc{% endfor %}").find("over 100 bytes") != std::string::npos);
  CHECK(render("{{ [1, 2, 3][::9223372036854775807] }} {{ range(9223372036854775806, 9223372036854775807, 5) }}") ==
        "[1] [9223372036854775806]");
}

// ---- text::ChatTemplate: where a checkpoint keeps its template ----------------

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("moe-chat-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write(const fs::path& file, const std::string& text) { std::ofstream(file, std::ios::binary) << text; }

}  // namespace

TEST_CASE("the end of an assistant's turn, found from each real template") {
  const std::map<std::string, std::string> expected{{"mixtral_instruct", "</s>"},  {"mistral_instruct_v0_1", "</s>"},
                                                    {"llama2_chat", "</s>"},       {"llama3_instruct", "<|eot_id|>"},
                                                    {"chatml", "<|im_end|>"},      {"zephyr", "</s>"},
                                                    {"gemma_it", "<end_of_turn>"}, {"smollm2_instruct", "<|im_end|>"}};
  const nlohmann::json templates = load("templates.json");
  for (const auto& t : templates["templates"]) {
    CAPTURE(t["name"].get<std::string>());
    const moe::text::ChatTemplate chat(t["template"], t["bos_token"], t["eos_token"], "test");
    CHECK(chat.end_marker() == expected.at(t["name"].get<std::string>()));
  }
  CHECK(moe::text::ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}", "", "", "t").end_marker() == "");
}

TEST_CASE("a folder's chat template: chat_template.jinja, a string, named templates") {
  const fs::path dir = fresh_dir("folder");
  CHECK_FALSE(moe::text::read_chat_template(dir).has_value());  // no tokenizer_config.json at all
  write(dir / "tokenizer_config.json",
        R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
            "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"})");
  auto chat = moe::text::read_chat_template(dir);
  REQUIRE(chat.has_value());
  const nlohmann::json messages = nlohmann::json::parse(R"([{"role": "user", "content": "hi"}])");
  CHECK(chat->apply(messages, true) == "<s>hi</s>");
  write(dir / "tokenizer_config.json",
        R"({"eos_token": "</s>", "chat_template": [{"name": "tool_use", "template": "T"},
                                                  {"name": "default", "template": "D{{ eos_token }}"}]})");
  CHECK(moe::text::read_chat_template(dir)->apply(messages, true) == "D</s>");
  write(dir / "chat_template.jinja", "J{{ messages[0]['content'] }}");  // transformers >= 4.43 writes this file
  CHECK(moe::text::read_chat_template(dir)->apply(messages, true) == "Jhi");
  fs::remove(dir / "chat_template.jinja");
  write(dir / "tokenizer_config.json", R"({"chat_template": 7})");
  CHECK_THROWS_WITH_AS(moe::text::read_chat_template(dir), doctest::Contains("neither a string nor a list"),
                       moe::Error);
  write(dir / "tokenizer_config.json", R"({"chat_template": "x")");
  CHECK_THROWS_WITH_AS(moe::text::read_chat_template(dir), doctest::Contains("not JSON"), moe::Error);
  // Messages are checked before the template sees them.
  CHECK_THROWS_WITH_AS(chat->apply(nlohmann::json::parse(R"([{"content": "no role"}])"), true),
                       doctest::Contains("messages[0]: expected an object with a string \"role\""), moe::Error);
  fs::remove_all(dir);
}

TEST_CASE("a GGUF's chat template and its special tokens by id") {
  const fs::path dir = fresh_dir("gguf");
  moe::io::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_strings("tokenizer.ggml.tokens", {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"});
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  w.add_string("tokenizer.chat_template",
               "{% for m in messages %}{{ bos_token + m.role + '\\n' + m.content + eos_token + '\\n' }}{% endfor %}");
  w.write(dir / "chat.gguf");
  const moe::io::Gguf g(dir / "chat.gguf");
  const auto chat = moe::text::gguf_chat_template(g, "chat.gguf");
  REQUIRE(chat.has_value());
  CHECK(chat->bos_token() == "<|im_start|>");
  CHECK(chat->eos_token() == "<|im_end|>");
  CHECK(chat->apply(nlohmann::json::parse(R"([{"role": "user", "content": "hi"}])"), false) ==
        "<|im_start|>user\nhi<|im_end|>\n");
  CHECK(chat->end_marker() == "<|im_end|>");
  fs::remove_all(dir);
}
