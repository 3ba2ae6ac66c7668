// moe-merge: build a frankenMoE (a Mixtral from dense Mistral/Llama models)
// from a mergekit-moe YAML config, streaming tensor by tensor.
//
//   moe-merge CONFIG.yml OUT_DIR [--random-seed N] [--out-shard-size 5B]
//             [--router-weights FILE] [--fused-experts] [--no-copy-tokenizer]
//             [--i-understand-this-is-not-useful-without-training]
//
// mergekit-moe's other flags are accepted and ignored where they concern
// Python or GPUs (--device, --cuda, --lazy-unpickle, --allow-crimes, ...),
// so a command line written for mergekit runs unchanged.
#include <moe/merge/merge.hpp>
#include <moe/merge/yaml_config.hpp>
#ifdef MOE_HAVE_PCRE2
#include <moe/merge/bpe_prompts.hpp>
#endif
#ifdef MOE_HAVE_SENTENCEPIECE
#include <moe/merge/sentencepiece_prompts.hpp>
#endif

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <unistd.h>

namespace fs = std::filesystem;
namespace mg = moe::merge;

namespace {

/// mergekit's sizes: a number with an optional K, M or B (10^3, 10^6, 10^9) suffix.
std::size_t parse_size(const std::string& s) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string suffix = used ? s.substr(used) : s;
  const double scale = suffix.empty()                                    ? 1
                       : suffix == "K" || suffix == "k"                  ? 1e3
                       : suffix == "M" || suffix == "m"                  ? 1e6
                       : suffix == "B" || suffix == "b" || suffix == "G" ? 1e9
                                                                         : 0;
  moe::detail::require(used > 0 && scale > 0 && v > 0, moe::ErrorCode::invalid_argument, "--out-shard-size: '", s,
                       "' is not a size (e.g. 5B, 500M, 1000000)");
  return std::size_t(v * scale);
}

/// A one-line progress bar on a terminal: tensors, bytes, rate and time left.
/// Redrawn at most ten times a second; nothing when stderr is not a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool tty) : tty_(tty) {}
  void operator()(const mg::MergeProgress& p) {
    if (!tty_) return;
    const auto now = Clock::now();
    if (p.tensors_done == 1) start_ = now, start_bytes_ = p.bytes_done;  // the clock starts with the writing
    const bool last = p.tensors_done == p.tensors;
    if (!last && now - drawn_ < std::chrono::milliseconds(100)) return;
    drawn_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double frac = p.bytes ? double(p.bytes_done) / double(p.bytes) : 1.0;
    const double rate = seconds > 0 ? double(p.bytes_done - start_bytes_) / seconds : 0;
    const int eta = rate > 0 ? int(double(p.bytes - p.bytes_done) / rate) : 0;
    const int width = 30, filled = int(frac * width);
    std::fprintf(stderr, "\r[%s%s] %3d%%  %zu/%zu tensors  %.2f/%.2f GB  %.0f MB/s  ETA %d:%02d ",
                 std::string(std::size_t(filled), '#').c_str(), std::string(std::size_t(width - filled), '.').c_str(),
                 int(frac * 100), p.tensors_done, p.tensors, double(p.bytes_done) / 1e9, double(p.bytes) / 1e9,
                 rate / 1e6, eta / 60, eta % 60);
    if (last) std::fputc('\n', stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool tty_;
  Clock::time_point start_{}, drawn_{};
  std::size_t start_bytes_ = 0;
};

/// mergekit's wording of its degenerate-gate warning.
std::string layer_list(const std::vector<moe::index_t>& layers, moe::index_t total) {
  if (moe::index_t(layers.size()) == total) return "ALL layers have";
  std::string s = layers.size() == 1 ? "layer " : "layers ";
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (i) s += layers.size() == 2 ? " and " : i + 1 == layers.size() ? ", and " : ", ";
    s += std::to_string(layers[i]);
  }
  return s + (layers.size() == 1 ? " has" : " have");
}

}  // namespace

int main(int argc, char** argv) try {
  CLI::App app{"moe-merge: build a Mixtral frankenMoE from dense models, from a mergekit-moe config"};
  std::string config_path, out_dir, shard_size = "5B", router_weights;
  mg::MergeOptions options;
  bool copy_tokenizer = true;
  app.add_option("config", config_path, "mergekit-moe YAML config")->required();
  app.add_option("out_path", out_dir, "folder to write the merged model into")->required();
  app.add_option("--random-seed", options.seed, "seed of random/uniform_random gates and noise_scale");
  app.add_option("--out-shard-size", shard_size, "largest output shard, in bytes (5B, 500M, ...)");
  app.add_option("--router-weights", router_weights,
                 "take every layer's router rows from this safetensors file (model.layers.L.block_sparse_moe.gate."
                 "weight [E, H]) instead of computing them");
  app.add_flag("--i-understand-this-is-not-useful-without-training", options.validate.allow_identical_models,
               "allow every expert to be the same model (sparse upcycling)");
  bool fused = false;
  app.add_flag("--fused-experts", fused,
               "write transformers 5's fused expert tensors (mlp.experts.gate_up_proj, down_proj), as mergekit "
               "0.1.5 does; default: one tensor per expert and matrix (block_sparse_moe.experts.E.w1/w2/w3), as "
               "mergekit 0.1.4");
  app.add_flag("--copy-tokenizer,!--no-copy-tokenizer", copy_tokenizer,
               "copy the base model's tokenizer files (default) or not");
  // mergekit-moe flags that concern its Python runtime: accepted, no effect here.
  std::string ignored_value;
  bool ignored_flag = false;
  for (const char* f : {"--allow-crimes", "--lazy-unpickle", "--cuda", "--gpu-rich", "--safe-serialization",
                        "--clone-tensors", "--write-model-card", "--async-write", "--trust-remote-code",
                        "--load-in-4bit", "--load-in-8bit", "--verbose,-v"})
    app.add_flag(f, ignored_flag, "(mergekit-moe option; no effect)")->group("mergekit-moe, ignored");
  app.add_option("--device", ignored_value, "(mergekit-moe option; moe-merge runs on the CPU)")
      ->group("mergekit-moe, ignored");
  CLI11_PARSE(app, argc, argv);
  options.copy_tokenizer = copy_tokenizer;
  options.layout = fused ? mg::ExpertLayout::fused : mg::ExpertLayout::per_expert;
  options.max_shard_bytes = parse_size(shard_size);
  if (!router_weights.empty()) options.router_weights = router_weights;

  const mg::YamlConfig yaml = mg::read_yaml_config(config_path);
  for (const std::string& key : yaml.ignored)
    std::fprintf(stderr, "moe-merge: %s: '%s' is not a mergekit-moe key; ignored\n", config_path.c_str(), key.c_str());
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  options.on_shard = [tty](std::size_t i, std::size_t n, const std::string& file) {
    if (!tty) std::fprintf(stderr, "writing %s (%zu of %zu)\n", file.c_str(), i + 1, n);
  };
  options.on_progress = ProgressBar(tty);
  // mergekit's order: the config is validated before the tokenizer is read.
  mg::validate(yaml.config, options.validate);
  const mg::GateMode mode = yaml.config.gate_mode;
  const bool prompts =
      mode == mg::GateMode::hidden || mode == mg::GateMode::hidden_avg || mode == mg::GateMode::cheap_embed;
  if (prompts && !options.router_weights && fs::is_directory(yaml.config.base_model)) {
    const fs::path base(yaml.config.base_model);
    // The base model's tokenizer.model, or (a transformers-5 save, a
    // byte-level BPE model) its tokenizer.json.
#ifdef MOE_HAVE_PCRE2
    if (!fs::exists(base / "tokenizer.model") && fs::exists(base / "tokenizer.json"))
      options.tokenizer = mg::tokenizer_json_prompts(base);
#endif
#ifdef MOE_HAVE_SENTENCEPIECE
    if (!options.tokenizer.encode) options.tokenizer = mg::sentencepiece_prompts(base);
#else
    if (!options.tokenizer.encode)
      throw moe::Error(moe::ErrorCode::unsupported,
                       std::string("gate_mode ") + mg::name(mode) +
                           " tokenises the prompts, and this moe-merge was built without SentencePiece "
                           "(apt-get install libsentencepiece-dev and rebuild), or use random / uniform_random");
#endif
  }
  const mg::MergeReport r = mg::merge(yaml.config, out_dir, options);
  if (!r.degenerate_layers.empty())
    std::fprintf(stderr,
                 "WARNING: %s degenerate routing parameters - your prompts may be too similar.\n"
                 "One or more experts will be underutilized in your model.\n",
                 layer_list(r.degenerate_layers, r.layers).c_str());
  if (r.experts & (r.experts - 1))
    std::fprintf(stderr, "WARNING: %lld experts is not a power of two; llama.cpp may not run this model\n",
                 (long long)r.experts);
  std::printf("wrote %s: Mixtral, %lld layers, %lld experts top-%d, gates %s, %.1f MiB in %zu shard(s)\n",
              out_dir.c_str(), (long long)r.layers, (long long)r.experts, yaml.config.experts_per_token,
              options.router_weights ? "from file" : mg::name(yaml.config.gate_mode), double(r.bytes) / (1 << 20),
              r.shards);
  return 0;
} catch (const CLI::Error& e) {
  std::cerr << "moe-merge: " << e.what() << "\n";
  return 2;
} catch (const std::exception& e) {
  std::cerr << "moe-merge: " << e.what() << "\n";
  return 1;
}
