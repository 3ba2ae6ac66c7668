#pragma once
/// \file config.hpp
/// Mixtral's hyper-parameters, read from a Hugging Face config.json; also
/// those of the dense models Mixtral grew from (model_type "mistral" and
/// "llama"), whose FFN is one SwiGLU: the decoder runs it as a sparse block
/// with one expert that every token goes to with weight exactly 1.
///
/// The sizes must be present; the rest default as in transformers'
/// MixtralConfig, MistralConfig or LlamaConfig. Every value is checked for type and range, and every
/// error names the file and the key, so a wrong config is caught before
/// any tensor is read.

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>

#include "moe/core/checked.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/checkpoint.hpp"

namespace moe::mixtral {

/// The architecture config.json's model_type names.
enum class Family { mixtral, mistral, llama };

inline const char* name(Family f) noexcept {
  return f == Family::mixtral ? "mixtral" : f == Family::mistral ? "mistral" : "llama";
}

/// Which values of a head RoPE rotates together (rope.hpp): Hugging Face's
/// halves (i, i + hd/2), or adjacent pairs (2i, 2i + 1), the order a GGUF
/// file stores q and k rows in (llama.cpp permutes them at conversion).
enum class RopePairs { halves, adjacent };

struct Config {
  Family family = Family::mixtral;
  index_t vocab_size = 0;
  index_t hidden_size = 0;        ///< H, the residual stream width
  index_t intermediate_size = 0;  ///< F, each expert's hidden width
  index_t num_layers = 0;
  index_t num_heads = 0;          ///< query heads
  index_t num_kv_heads = 0;       ///< key/value heads (grouped-query attention)
  index_t head_dim = 0;           ///< explicit in config.json, or hidden_size / num_heads
  index_t num_experts = 0;        ///< num_local_experts (1 for a dense model)
  index_t experts_per_token = 0;  ///< k of top-k (1 for a dense model)
  double rms_norm_eps = 1e-5;
  double rope_theta = 1e6;
  std::optional<index_t> sliding_window;  ///< keys a query may see, itself included; none = full causal
  index_t max_positions = 131072;         ///< max_position_embeddings: the context limit
  bool tie_word_embeddings = false;       ///< lm_head is embed_tokens
  std::optional<DType> dtype;             ///< torch_dtype: the stored weights' dtype, when the config names it
  std::optional<std::int32_t> bos_token_id;
  std::optional<std::int32_t> eos_token_id;
  RopePairs rope_pairs = RopePairs::halves;  ///< adjacent for a GGUF file (not a config.json key)

  /// Mistral or Llama: one dense SwiGLU FFN per layer, no router.
  bool dense() const noexcept { return family != Family::mixtral; }
  index_t group_size() const noexcept { return num_heads / num_kv_heads; }  ///< query heads per kv head
  index_t q_width() const noexcept { return num_heads * head_dim; }
  index_t kv_width() const noexcept { return num_kv_heads * head_dim; }
};

namespace detail {

using moe::detail::cat;
using moe::detail::require;

/// A value as it appears in the file, cut short for an error message.
inline std::string json_text(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

/// A positive integer under `key`; `fallback` when absent (or an error if none).
inline index_t positive_int(const nlohmann::json& j, const std::string& file, const char* key,
                            std::optional<index_t> fallback = std::nullopt) {
  if (!j.contains(key) || j[key].is_null()) {
    require(fallback.has_value(), ErrorCode::bad_file, file, ": missing key \"", key, "\" (a positive integer)");
    return *fallback;
  }
  const nlohmann::json& v = j[key];
  require(v.is_number_integer() && v.get<std::int64_t>() > 0, ErrorCode::bad_file, file, ": \"", key,
          "\" must be a positive integer, found ", json_text(v));
  return index_t(v.get<std::int64_t>());
}

inline double positive_number(const nlohmann::json& j, const std::string& file, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const nlohmann::json& v = j[key];
  require(v.is_number() && v.get<double>() > 0 && std::isfinite(v.get<double>()), ErrorCode::bad_file, file, ": \"",
          key, "\" must be a positive number, found ", json_text(v));
  return v.get<double>();
}

/// A token id under `key`, which must be in [0, vocab_size); none when
/// absent or null. Some configs list several ids; the first is the one
/// generation stops on by default.
inline std::optional<std::int32_t> token_id(const nlohmann::json& j, const std::string& file, const char* key,
                                            index_t vocab_size) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const nlohmann::json& v = j[key];
  const nlohmann::json& id = v.is_array() && !v.empty() ? v[0] : v;
  require(id.is_number_integer() && id.get<std::int64_t>() >= 0 && id.get<std::int64_t>() < vocab_size,
          ErrorCode::bad_file, file, ": \"", key, "\" must be a token id in [0, vocab_size ", vocab_size, "), found ",
          json_text(v));
  return std::int32_t(id.get<std::int64_t>());
}

inline DType torch_dtype(const nlohmann::json& v, const std::string& file) {
  require(v.is_string(), ErrorCode::bad_file, file, ": \"torch_dtype\" must be a string, found ", json_text(v));
  const std::string s = v.get<std::string>();
  if (s == "float32") return DType::F32;
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  throw Error(ErrorCode::unsupported,
              cat(file, ": torch_dtype \"", s, "\" is not supported (expected float32, bfloat16 or float16)"));
}

}  // namespace detail

/// Parses and checks a config already read as JSON (`file` names it in errors).
inline Config parse_config(const nlohmann::json& j, const std::string& file) {
  using detail::positive_int;
  using moe::detail::require;
  require(j.is_object(), ErrorCode::bad_file, file, ": expected a JSON object");
  Config c;
  if (j.contains("model_type")) {
    const nlohmann::json& t = j["model_type"];
    if (t == "mistral")
      c.family = Family::mistral;
    else if (t == "llama")
      c.family = Family::llama;
    else
      require(t == "mixtral", ErrorCode::unsupported, file, ": model_type is ", detail::json_text(t),
              ", expected \"mixtral\", \"mistral\" or \"llama\"");
  }
  if (c.family == Family::llama)  // biases are LlamaConfig options the decoder does not have
    for (const char* key : {"attention_bias", "mlp_bias"})
      if (j.contains(key))
        require(j[key] == false, ErrorCode::unsupported, file, ": ", key, " is ", detail::json_text(j[key]),
                ", only false (no biases) is supported");
  if (j.contains("hidden_act"))
    require(j["hidden_act"] == "silu", ErrorCode::unsupported, file, ": hidden_act is ",
            detail::json_text(j["hidden_act"]), ", only \"silu\" (SwiGLU experts) is supported");
  if (j.contains("rope_scaling"))
    require(j["rope_scaling"].is_null(), ErrorCode::unsupported, file, ": rope_scaling ",
            detail::json_text(j["rope_scaling"]), " is not supported (plain RoPE only)");

  // transformers' defaults differ by family: MixtralConfig, MistralConfig, LlamaConfig.
  const bool mixtral = c.family == Family::mixtral, llama = c.family == Family::llama;
  c.vocab_size = positive_int(j, file, "vocab_size");
  c.hidden_size = positive_int(j, file, "hidden_size");
  c.intermediate_size = positive_int(j, file, "intermediate_size");
  c.num_layers = positive_int(j, file, "num_hidden_layers");
  c.num_heads = positive_int(j, file, "num_attention_heads");
  c.num_kv_heads = positive_int(j, file, "num_key_value_heads", c.num_heads);
  c.num_experts = mixtral ? positive_int(j, file, "num_local_experts") : 1;
  c.experts_per_token = mixtral ? positive_int(j, file, "num_experts_per_tok", 2) : 1;
  c.max_positions = positive_int(j, file, "max_position_embeddings", llama ? 2048 : 131072);
  c.rms_norm_eps = detail::positive_number(j, file, "rms_norm_eps", mixtral ? 1e-5 : 1e-6);
  c.rope_theta = detail::positive_number(j, file, "rope_theta", mixtral ? 1e6 : 1e4);
  // transformers >= 5 writes RoPE's settings as {"rope_parameters": {"rope_type", "rope_theta"}}.
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const nlohmann::json& rope = j["rope_parameters"];
    require(rope.is_object(), ErrorCode::bad_file, file, ": \"rope_parameters\" must be an object, found ",
            detail::json_text(rope));
    if (rope.contains("rope_type"))
      require(rope["rope_type"] == "default", ErrorCode::unsupported, file, ": rope_parameters.rope_type is ",
              detail::json_text(rope["rope_type"]), ", only \"default\" (plain RoPE) is supported");
    c.rope_theta = detail::positive_number(rope, file, "rope_theta", c.rope_theta);
  }
  // MistralConfig's window defaults to 4096; LlamaConfig has none (a stray key is ignored, as there).
  if (c.family == Family::mistral && !j.contains("sliding_window")) c.sliding_window = 4096;
  if (!llama && j.contains("sliding_window") && !j["sliding_window"].is_null())
    c.sliding_window = positive_int(j, file, "sliding_window");
  if (j.contains("tie_word_embeddings")) {
    require(j["tie_word_embeddings"].is_boolean(), ErrorCode::bad_file, file,
            ": \"tie_word_embeddings\" must be true or false, found ", detail::json_text(j["tie_word_embeddings"]));
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  // Newer transformers write "dtype", older ones "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"})
    if (j.contains(key) && !j[key].is_null()) c.dtype = detail::torch_dtype(j[key], file);
  // vocab_size is checked below to fit int32, so a valid id always does.
  require(c.vocab_size <= std::numeric_limits<std::int32_t>::max(), ErrorCode::bad_file, file, ": vocab_size ",
          c.vocab_size, " exceeds 2^31 - 1 (token ids are int32)");
  c.bos_token_id = detail::token_id(j, file, "bos_token_id", c.vocab_size);
  c.eos_token_id = detail::token_id(j, file, "eos_token_id", c.vocab_size);

  // head_dim: explicit, or the hidden size split evenly over the heads.
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = positive_int(j, file, "head_dim");
  } else {
    require(c.hidden_size % c.num_heads == 0, ErrorCode::bad_file, file, ": hidden_size ", c.hidden_size,
            " is not divisible by num_attention_heads ", c.num_heads, " (and no head_dim is given)");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  require(c.head_dim % 2 == 0, ErrorCode::bad_file, file, ": head_dim ", c.head_dim,
          " must be even (RoPE rotates pairs of halves)");
  // Every size the decoder multiplies must stay in range (the tensors' own
  // products are checked when the checkpoint is opened).
  (void)checked::mul(c.num_heads, c.head_dim, file + ": num_attention_heads * head_dim");
  (void)checked::mul(c.vocab_size, c.hidden_size, file + ": vocab_size * hidden_size");
  (void)checked::mul(checked::mul(c.num_experts, c.intermediate_size, file + ": num_local_experts * intermediate_size"),
                     c.hidden_size, file + ": num_local_experts * intermediate_size * hidden_size");
  require(c.num_heads % c.num_kv_heads == 0, ErrorCode::bad_file, file, ": num_attention_heads ", c.num_heads,
          " is not a multiple of num_key_value_heads ", c.num_kv_heads);
  require(c.experts_per_token <= c.num_experts, ErrorCode::bad_file, file, ": num_experts_per_tok ",
          c.experts_per_token, " exceeds num_local_experts ", c.num_experts);
  return c;
}

/// The config.json that describes `c` (the keys transformers writes).
inline nlohmann::json to_json(const Config& c) {
  const char* architecture = c.family == Family::mixtral   ? "MixtralForCausalLM"
                             : c.family == Family::mistral ? "MistralForCausalLM"
                                                           : "LlamaForCausalLM";
  nlohmann::json j = {{"architectures", {architecture}},
                      {"model_type", name(c.family)},
                      {"vocab_size", c.vocab_size},
                      {"hidden_size", c.hidden_size},
                      {"intermediate_size", c.intermediate_size},
                      {"num_hidden_layers", c.num_layers},
                      {"num_attention_heads", c.num_heads},
                      {"num_key_value_heads", c.num_kv_heads},
                      {"head_dim", c.head_dim},
                      {"num_local_experts", c.num_experts},
                      {"num_experts_per_tok", c.experts_per_token},
                      {"hidden_act", "silu"},
                      {"max_position_embeddings", c.max_positions},
                      {"rms_norm_eps", c.rms_norm_eps},
                      {"rope_theta", c.rope_theta},
                      {"sliding_window", nullptr},
                      {"tie_word_embeddings", c.tie_word_embeddings},
                      {"router_aux_loss_coef", 0.02},
                      {"use_cache", true}};
  if (c.sliding_window) j["sliding_window"] = *c.sliding_window;
  if (c.dense()) {
    j.erase("num_local_experts");
    j.erase("num_experts_per_tok");
    j.erase("router_aux_loss_coef");
    if (c.family == Family::llama) j.erase("sliding_window");
  }
  if (c.dtype) j["torch_dtype"] = *c.dtype == DType::F32 ? "float32" : *c.dtype == DType::BF16 ? "bfloat16" : "float16";
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  return j;
}

/// Reads `dir`/config.json, or a GGUF file's metadata (io::gguf_hf_config)
/// when `dir` is a .gguf file.
inline Config load_config(const std::filesystem::path& dir) {
  if (io::Checkpoint::is_gguf(dir)) {
    Config c = parse_config(io::gguf_hf_config(io::Gguf(dir)), dir.string());
    c.rope_pairs = RopePairs::adjacent;
    return c;
  }
  const std::filesystem::path path = dir / "config.json";
  moe::detail::require(std::filesystem::is_directory(dir), ErrorCode::bad_file, dir.string(),
                       ": not a checkpoint folder (",
                       std::filesystem::exists(dir) ? "not a directory" : "does not exist", ")");
  moe::detail::require(std::filesystem::exists(path), ErrorCode::bad_file, dir.string(), ": has no config.json");
  return parse_config(io::read_json(path), path.string());
}

}  // namespace moe::mixtral
