#pragma once
/// \file chat.hpp
/// A model's chat template: where a checkpoint keeps it, the special tokens
/// it is rendered with, and the marker that ends an assistant's turn.
///
/// A Hugging Face folder keeps the template in `chat_template.jinja`
/// (transformers 4.43 and later write it there) or under `chat_template`
/// in tokenizer_config.json (a string, or a list of named templates of
/// which "default" is the one apply_chat_template uses), with `bos_token`
/// and `eos_token` beside it (a string, or an object whose `content` is
/// the text). A GGUF file keeps it as `tokenizer.chat_template`, and its
/// special tokens as ids into `tokenizer.ggml.tokens`.

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "moe/core/error.hpp"
#include "moe/io/gguf.hpp"
#include "moe/text/jinja.hpp"

namespace moe::text {

/// A chat template and the special tokens its variables name.
class ChatTemplate {
 public:
  ChatTemplate(std::string source, std::string bos_token, std::string eos_token, std::string origin)
      : template_(source),
        source_(std::move(source)),
        bos_(std::move(bos_token)),
        eos_(std::move(eos_token)),
        origin_(std::move(origin)) {}

  const std::string& source() const noexcept { return source_; }
  const std::string& bos_token() const noexcept { return bos_; }
  const std::string& eos_token() const noexcept { return eos_; }
  /// Where it was read from ("DIR/tokenizer_config.json", "FILE.gguf").
  const std::string& origin() const noexcept { return origin_; }

  /// The prompt text for `messages`, a JSON array of objects with a string
  /// `role` (and usually `content`), as apply_chat_template renders it;
  /// with add_generation_prompt, ending where the assistant's reply starts.
  std::string apply(const nlohmann::json& messages, bool add_generation_prompt) const {
    require(messages.is_array(), "messages: expected a JSON array, got ", messages.type_name());
    for (std::size_t i = 0; i < messages.size(); ++i)
      require(messages[i].is_object() && messages[i].contains("role") && messages[i]["role"].is_string(), "messages[",
              i, "]: expected an object with a string \"role\", got ", messages[i].dump());
    return template_.render({{"messages", jinja::Value::from_json(messages)},
                             {"bos_token", jinja::Value::of(bos_)},
                             {"eos_token", jinja::Value::of(eos_)},
                             {"add_generation_prompt", jinja::Value::of(add_generation_prompt)}});
  }

  /// The text the template writes right after an assistant's reply, up to
  /// the next whitespace ("</s>", "<|im_end|>", "<|eot_id|>",
  /// "<end_of_turn>"): generation stops there as it does at EOS. Found by
  /// rendering a one-turn conversation around a marked reply; "" when the
  /// template writes nothing after a reply, or refuses the probe.
  std::string end_marker() const {
    const std::string reply = "\x02reply\x03";
    for (bool with_system : {false, true}) {
      nlohmann::json probe = nlohmann::json::array();
      if (with_system) probe.push_back({{"role", "system"}, {"content", "s"}});
      probe.push_back({{"role", "user"}, {"content", "u"}});
      probe.push_back({{"role", "assistant"}, {"content", reply}});
      std::string text;
      try {
        text = apply(probe, false);
      } catch (const Error&) {
        continue;
      }
      const std::size_t at = text.find(reply);
      if (at == std::string::npos) continue;
      const std::size_t begin = text.find_first_not_of(" \t\r\n", at + reply.size());
      if (begin == std::string::npos) return "";
      return text.substr(begin, text.find_first_of(" \t\r\n", begin) - begin);
    }
    return "";
  }

 private:
  template <class... Parts>
  void require(bool ok, Parts&&... parts) const {
    moe::detail::require(ok, ErrorCode::invalid_argument, "chat template of ", origin_, ": ",
                         std::forward<Parts>(parts)...);
  }

  jinja::Template template_;
  std::string source_, bos_, eos_, origin_;
};

namespace detail {

/// A special token in tokenizer_config.json: a string, an AddedToken
/// object ({"content": "<s>", ...}) or null.
inline std::string token_text(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return "";
  const nlohmann::json& t = config[key];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_object() && t.contains("content") && t["content"].is_string()) return t["content"].get<std::string>();
  return "";
}

inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  moe::detail::require(in.good(), ErrorCode::bad_file, "cannot read ", file.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace detail

/// The chat template of a Hugging Face folder, or nullopt if it has none.
inline std::optional<ChatTemplate> read_chat_template(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  nlohmann::json config = nlohmann::json::object();
  const fs::path config_file = dir / "tokenizer_config.json";
  if (fs::exists(config_file)) {
    try {
      config = nlohmann::json::parse(detail::read_text(config_file));
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::bad_file, config_file.string() + ": not JSON (" + e.what() + ")");
    }
    moe::detail::require(config.is_object(), ErrorCode::bad_file, config_file.string(), ": expected a JSON object");
  }
  const std::string bos = detail::token_text(config, "bos_token"), eos = detail::token_text(config, "eos_token");
  if (fs::exists(dir / "chat_template.jinja"))
    return ChatTemplate(detail::read_text(dir / "chat_template.jinja"), bos, eos,
                        (dir / "chat_template.jinja").string());
  if (!config.contains("chat_template") || config["chat_template"].is_null()) return std::nullopt;
  const nlohmann::json& t = config["chat_template"];
  if (t.is_string()) return ChatTemplate(t.get<std::string>(), bos, eos, config_file.string());
  // Named templates: [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
  if (t.is_array())
    for (const nlohmann::json& named : t)
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
          named["template"].is_string())
        return ChatTemplate(named["template"].get<std::string>(), bos, eos, config_file.string() + " (default)");
  throw Error(ErrorCode::bad_file,
              config_file.string() + ": chat_template is neither a string nor a list with a \"default\" template");
}

/// The chat template of a GGUF file, or nullopt if it has none.
inline std::optional<ChatTemplate> gguf_chat_template(const io::Gguf& g, const std::string& origin) {
  const std::optional<std::string> source = g.get_string_or("tokenizer.chat_template");
  if (!source) return std::nullopt;
  const auto token = [&](const char* key) -> std::string {
    const std::optional<std::int64_t> id = g.get_int_or(key);
    if (!id || !g.contains("tokenizer.ggml.tokens")) return "";
    const std::vector<std::string>& tokens = g.get_strings("tokenizer.ggml.tokens");
    moe::detail::require(*id >= 0 && std::size_t(*id) < tokens.size(), ErrorCode::bad_file, origin, ": ", key, " ", *id,
                         " is not a token id (", tokens.size(), " tokens)");
    return tokens[std::size_t(*id)];
  };
  return ChatTemplate(*source, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"), origin);
}

}  // namespace moe::text
