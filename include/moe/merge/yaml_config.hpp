#pragma once
/// \file yaml_config.hpp
/// Reads mergekit-moe's YAML config into a MergeConfig (needs yaml-cpp).
///
/// A config a user wrote for mergekit-moe works unchanged: the same keys,
/// the same defaults, `hidden_last` as an alias of `hidden`, a `torch.`
/// prefix on dtype allowed, unknown keys ignored (pydantic's default; they
/// are listed in `ignored`, so a typo can be reported). What mergekit would
/// only trip over later (an unknown gate_mode, shared experts or another
/// output architecture, a number where a list belongs) is an error here,
/// naming the file and the key.

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "moe/io/mapped_file.hpp"
#include "moe/merge/config.hpp"

namespace moe::merge {

struct YamlConfig {
  MergeConfig config;
  std::vector<std::string> ignored;  ///< keys mergekit-moe does not know, as "experts[1].promtps"
};

namespace detail {

using moe::detail::cat;
using moe::detail::require;

/// A map key: YAML allows lists and maps as keys; mergekit's keys are names.
inline std::string key_name(const YAML::Node& k, const std::string& where, const std::string& in) {
  require(k.IsScalar(), ErrorCode::bad_file, where, ": keys", in.empty() ? "" : " in \"" + in + "\"",
          " must be names, found a ",
          k.IsSequence() ? "list"
          : k.IsMap()    ? "map"
                         : "null",
          " as a key");
  return k.Scalar();
}

inline std::string scalar(const YAML::Node& n, const std::string& where, const std::string& key) {
  require(n.IsScalar(), ErrorCode::bad_file, where, ": \"", key, "\" must be a string");
  return n.Scalar();
}

inline std::vector<std::string> strings(const YAML::Node& n, const std::string& where, const std::string& key) {
  std::vector<std::string> out;
  if (n.IsNull()) return out;
  require(n.IsSequence(), ErrorCode::bad_file, where, ": \"", key, "\" must be a list of strings");
  for (std::size_t i = 0; i < n.size(); ++i) out.push_back(scalar(n[i], where, cat(key, "[", i, "]")));
  return out;
}

template <class T>
T number(const YAML::Node& n, const std::string& where, const std::string& key, const char* what) {
  T v{};
  require(n.IsScalar() && YAML::convert<T>::decode(n, v), ErrorCode::bad_file, where, ": \"", key, "\" must be ", what,
          ", found '", n.IsScalar() ? n.Scalar() : std::string("a ") + (n.IsSequence() ? "list" : "map"), "'");
  return v;
}

inline GateMode gate_mode(const std::string& s, const std::string& where) {
  if (s == "hidden" || s == "hidden_last") return GateMode::hidden;
  if (s == "hidden_avg") return GateMode::hidden_avg;
  if (s == "cheap_embed") return GateMode::cheap_embed;
  if (s == "random") return GateMode::random;
  if (s == "uniform_random") return GateMode::uniform_random;
  throw Error(
      ErrorCode::invalid_argument,
      cat(where, ": gate_mode '", s, "' is not one of hidden, hidden_avg, cheap_embed, random, uniform_random"));
}

inline DType out_dtype(std::string s, const std::string& where) {
  if (s.rfind("torch.", 0) == 0) s = s.substr(6);
  if (s == "float32") return DType::F32;
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  throw Error(ErrorCode::unsupported,
              cat(where, ": dtype '", s, "' is not supported (expected float32, bfloat16 or float16)"));
}

inline ExpertSource expert(const YAML::Node& n, const std::string& where, const std::string& key,
                           std::vector<std::string>& ignored) {
  require(n.IsMap(), ErrorCode::bad_file, where, ": \"", key, "\" must be a map with source_model and prompts");
  ExpertSource e;
  require(bool(n["source_model"]) && !n["source_model"].IsNull(), ErrorCode::bad_file, where, ": \"", key,
          ".source_model\" is missing");
  for (const auto& kv : n) {
    const std::string k = key_name(kv.first, where, key), full = key + "." + k;
    const YAML::Node& v = kv.second;
    if (k == "source_model")
      e.source_model = scalar(v, where, full);
    else if (k == "positive_prompts")
      e.positive_prompts = strings(v, where, full);
    else if (k == "negative_prompts")
      e.negative_prompts = strings(v, where, full);
    else if (k == "noise_scale" && !v.IsNull())
      e.noise_scale = number<double>(v, where, full, "a number");
    else if (k == "residual_scale" && !v.IsNull())
      e.residual_scale = number<double>(v, where, full, "a number");
    else if (k != "noise_scale" && k != "residual_scale")
      ignored.push_back(full);
  }
  return e;
}

/// parse_yaml_config without the final net for yaml-cpp's own exceptions.
inline YamlConfig parse_yaml_config_unguarded(const std::string& text, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::bad_file, detail::cat(where, ": not valid YAML (", e.what(), ")"));
  }
  require(root.IsMap(), ErrorCode::bad_file, where, ": expected a map of mergekit-moe keys (base_model, experts, ...)");
  YamlConfig out;
  MergeConfig& c = out.config;
  c.text = text;
  require(bool(root["base_model"]) && !root["base_model"].IsNull(), ErrorCode::bad_file, where,
          ": \"base_model\" is missing");
  require(bool(root["experts"]) && !root["experts"].IsNull(), ErrorCode::bad_file, where, ": \"experts\" is missing");
  for (const auto& kv : root) {
    const std::string k = detail::key_name(kv.first, where, "");
    const YAML::Node& v = kv.second;
    if (k == "base_model") {
      c.base_model = detail::scalar(v, where, k);
    } else if (k == "experts") {
      require(v.IsSequence(), ErrorCode::bad_file, where, ": \"experts\" must be a list");
      for (std::size_t i = 0; i < v.size(); ++i)
        c.experts.push_back(detail::expert(v[i], where, detail::cat("experts[", i, "]"), out.ignored));
    } else if (k == "gate_mode") {
      if (!v.IsNull()) c.gate_mode = detail::gate_mode(detail::scalar(v, where, k), where);
    } else if (k == "dtype") {
      if (!v.IsNull()) c.dtype = detail::out_dtype(detail::scalar(v, where, k), where);
    } else if (k == "experts_per_token") {
      if (!v.IsNull()) c.experts_per_token = detail::number<int>(v, where, k, "an integer");
    } else if (k == "shared_experts") {
      require(v.IsNull() || (v.IsSequence() && v.size() == 0), ErrorCode::unsupported, where,
              ": shared_experts are for DeepSeek and Qwen MoE outputs; this merge writes Mixtral, which has none");
    } else if (k == "architecture") {
      if (v.IsNull()) continue;
      std::string a = detail::scalar(v, where, k);
      std::transform(a.begin(), a.end(), a.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
      require(std::string("mixtral").rfind(a, 0) == 0, ErrorCode::unsupported, where, ": architecture '", v.Scalar(),
              "' is not supported (this merge writes Mixtral)");
    } else {
      out.ignored.push_back(k);
    }
  }
  return out;
}
}  // namespace detail

/// Parses mergekit-moe YAML text; `where` names it in errors. Any yaml-cpp
/// exception a check above did not foresee still leaves as a moe::Error.
inline YamlConfig parse_yaml_config(const std::string& text, const std::string& where) {
  try {
    return detail::parse_yaml_config_unguarded(text, where);
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::bad_file, detail::cat(where, ": ", e.what()));
  }
}

/// Reads and parses the YAML file at `path` (a regular file, at most 16 MiB).
inline YamlConfig read_yaml_config(const std::filesystem::path& path) {
  const io::MappedFile file(path);
  detail::require(file.size() <= (std::size_t(16) << 20), ErrorCode::bad_file, path.string(), ": ", file.size(),
                  " bytes, more than a merge config's limit of 16 MiB");
  const std::string text(reinterpret_cast<const char*>(file.data()), file.size());
  return parse_yaml_config(text, path.string());
}

}  // namespace moe::merge
