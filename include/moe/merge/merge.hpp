#pragma once
/// \file merge.hpp
/// Builds a frankenMoE: a Mixtral checkpoint assembled from dense Mistral or
/// Llama folders, as mergekit-moe does (../FRANKENMOE.md of the project's
/// notes; config.hpp for the config), streamed: each output tensor is read
/// from the mapped sources, converted and written as its shard is written,
/// so memory holds one tensor at a time, never a model.
///
///   from base_model       embed_tokens, every layer's norms and attention,
///                         model.norm, lm_head (absent when tied)
///   from experts[e]       layer l: mlp.gate_proj → experts.e.w1,
///                         mlp.down_proj → w2, mlp.up_proj → w3
///                         (+ N(0,1)·noise_scale on all three, then
///                         down_proj × residual_scale)
///   router, layer l       [E, H] rows from gate_mode (gates.hpp), or a file
///
/// Before any work, beyond mergekit's own checks: every model a local
/// folder, of one family (all mistral or all llama; mergekit refuses a mix
/// too), with the base's hidden size, FFN width and layer count (mergekit
/// writes a broken model or fails late on a mismatch).

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "moe/core/rng.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/sharded_writer.hpp"
#include "moe/layer/weight_store.hpp"
#include "moe/merge/config.hpp"
#include "moe/merge/gates.hpp"
#include "moe/models/mixtral/config.hpp"
#include "moe/models/mixtral/weights.hpp"

namespace moe::merge {

/// How the experts' tensors are stored: one [I, H] / [H, I] tensor per expert
/// and matrix (Mixtral's original names, block_sparse_moe.experts.e.w1/w2/w3,
/// what transformers 4 and mergekit ≤ 0.1.4 write), or transformers 5's
/// fused per-layer tensors (mlp.experts.gate_up_proj / down_proj, what
/// mergekit 0.1.5 writes). moe-mixtral and transformers 5 read both.
enum class ExpertLayout { per_expert, fused };

/// How far a merge's writing is (MergeOptions::on_progress).
struct MergeProgress {
  std::size_t tensors_done = 0, tensors = 0;
  std::size_t bytes_done = 0, bytes = 0;  ///< of output tensor data
};

struct MergeOptions {
  ValidateOptions validate;
  std::uint64_t seed = 0;                       ///< random / uniform_random gates and noise_scale draws
  std::size_t max_shard_bytes = 5'000'000'000;  ///< mergekit's --out-shard-size default (bytes)
  /// Router rows for every layer, instead of computing them: a safetensors
  /// file with `model.layers.{l}.block_sparse_moe.gate.weight` [E, H] per layer.
  std::optional<std::filesystem::path> router_weights;
  /// How prompts become token ids (cheap_embed, hidden, hidden_avg; see
  /// sentencepiece_prompts.hpp for the base's tokenizer.model).
  PromptTokenizer tokenizer;
  bool copy_tokenizer = true;
  ExpertLayout layout = ExpertLayout::per_expert;
  /// Called before each output shard is written: (index, count, file name).
  std::function<void(std::size_t, std::size_t, const std::string&)> on_shard;
  /// Called after each output tensor is written (a progress bar's ticks).
  std::function<void(const MergeProgress&)> on_progress;
};

struct MergeReport {
  index_t layers = 0, experts = 0;
  std::size_t bytes = 0, shards = 0;
  std::vector<double> gate_condition;      ///< per layer: σ_max / σ_min of its [E, H] router
  std::vector<index_t> degenerate_layers;  ///< layers whose condition number exceeds 5 (mergekit's warning)
};

/// One source folder: its config and its mapped tensors, every one checked
/// against the config (present, weight dtype, shape, nothing extra) as the
/// decoder checks a model it loads.
struct SourceModel {
  std::filesystem::path dir;
  mixtral::Config config;
  io::Checkpoint checkpoint;
  explicit SourceModel(const std::filesystem::path& d) : dir(d), config(mixtral::load_config(d)), checkpoint(d) {
    (void)mixtral::load_weights(checkpoint, config);
  }
};

namespace detail {
using moe::detail::cat;
using moe::detail::require;

inline std::filesystem::path local_folder(const std::string& ref, const std::string& role) {
  const std::filesystem::path p(ref);
  require(!io::Checkpoint::is_gguf(p), ErrorCode::bad_file, role, " '", ref,
          "' is a GGUF file: moe-merge reads Hugging Face folders (moe-convert FILE.gguf DIR makes one)");
  require(std::filesystem::is_directory(p), ErrorCode::bad_file, role, " '", ref,
          "' is not a local folder (moe-merge reads Hugging Face folders on disk: download it first, e.g. "
          "huggingface-cli download ",
          ref, " --local-dir DIR)");
  return p;
}

/// The dtype names config.json uses.
inline const char* torch_name(DType d) {
  return d == DType::F32 ? "float32" : d == DType::BF16 ? "bfloat16" : "float16";
}

/// v rounded to `d` (to nearest even) and back.
inline float round_to(DType d, float v) {
  if (d == DType::F32) return v;
  unsigned char b[4];
  moe::detail::store_as(d, v, b);
  float r = 0;
  widen_to_float(b, d, 0, 1, &r);
  return r;
}

/// Tells the kernel a source tensor's pages will not be read again soon: a
/// streamed merge reads every source byte once, and without this the mapped
/// pages would count as resident until the end (the merge of four 7B models
/// would look like 56 GB of RSS). A later read maps them in again.
inline void release_pages(const unsigned char* p, std::size_t n) {
  static const std::size_t page = std::size_t(::sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<std::uintptr_t>(p) / page * page;
  const auto last = reinterpret_cast<std::uintptr_t>(p) + n;
  if (n > 0) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

/// Converts n values from `from` to `to` (rounded to nearest even), applying
/// `edit` to each value in float when given.
inline void convert(const unsigned char* src, DType from, index_t n, DType to, unsigned char* dst,
                    const std::function<float(index_t, float)>& edit = {}) {
  const std::size_t width = std::size_t(size_of(to));
  if (from == to && !edit) {
    std::memcpy(dst, src, std::size_t(n) * width);
    release_pages(src, std::size_t(n) * width);
    return;
  }
  std::vector<float> row(4096);
  for (index_t first = 0; first < n; first += 4096) {
    const index_t m = std::min<index_t>(4096, n - first);
    widen_to_float(src, from, first, m, row.data());
    for (index_t i = 0; i < m; ++i) {
      const float v = edit ? edit(first + i, row[std::size_t(i)]) : row[std::size_t(i)];
      moe::detail::store_as(to, v, dst + std::size_t(first + i) * width);
    }
  }
  release_pages(src, std::size_t(n) * std::size_t(size_of(from)));
}

/// mergekit saves the base's tokenizer after padding it with BOS (EOS when
/// there is none), for its prompt batches; the copied configs say the same.
inline void pad_with_bos(const std::filesystem::path& dir) {
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const std::filesystem::path file = dir / f;
    if (!std::filesystem::is_regular_file(file)) continue;
    nlohmann::json j = io::read_json(file);
    const char* pad = j.contains("bos_token") && !j["bos_token"].is_null()   ? "bos_token"
                      : j.contains("eos_token") && !j["eos_token"].is_null() ? "eos_token"
                                                                             : nullptr;
    if (!pad) continue;
    j["pad_token"] = j[pad];
    std::ofstream out(file);
    out << j.dump(2) << "\n";
    require(bool(out), ErrorCode::bad_file, file.string(), ": write failed");
  }
}
}  // namespace detail

/// The merged model's config.json: the base's, made a Mixtral (mergekit's
/// _generate_config: a Llama base becomes a Mistral first, no sliding
/// window; everything else carried over).
inline nlohmann::json merged_config(const nlohmann::json& base, index_t experts, int experts_per_token,
                                    std::optional<DType> dtype) {
  nlohmann::json j = base;
  j["architectures"] = {"MixtralForCausalLM"};
  j["model_type"] = "mixtral";
  j["num_local_experts"] = experts;
  j["num_experts_per_tok"] = experts_per_token;
  j["sliding_window"] = nullptr;
  for (const auto& [key, value] : {std::pair<const char*, nlohmann::json>{"router_aux_loss_coef", 0.001},
                                   {"output_router_logits", false},
                                   {"router_jitter_noise", 0.0}})
    if (!j.contains(key)) j[key] = value;
  for (const char* key : {"mlp_bias", "pretraining_tp"}) j.erase(key);  // Llama-only keys Mixtral lacks
  if (dtype) j[base.contains("dtype") ? "dtype" : "torch_dtype"] = detail::torch_name(*dtype);
  return j;
}

/// Builds the merge `c` describes into `out_dir`.
inline MergeReport merge(const MergeConfig& c, const std::filesystem::path& out_dir, const MergeOptions& o = {}) {
  using detail::cat;
  using detail::require;
  validate(c, o.validate);
  // Every model opened and checked before anything is written.
  const SourceModel base(detail::local_folder(c.base_model, "base_model"));
  require(base.config.dense(), ErrorCode::unsupported, base.dir.string(), ": base_model is a ",
          mixtral::name(base.config.family), " model; a merge takes dense mistral or llama models");
  std::vector<std::unique_ptr<SourceModel>> experts;
  for (std::size_t i = 0; i < c.experts.size(); ++i) {
    const std::string role = cat("experts[", i, "].source_model");
    experts.push_back(std::make_unique<SourceModel>(detail::local_folder(c.experts[i].source_model, role)));
    const mixtral::Config& x = experts.back()->config;
    const mixtral::Config& b = base.config;
    require(x.family == b.family, ErrorCode::unsupported, role, " (", c.experts[i].source_model, ") is a ",
            mixtral::name(x.family), " model and base_model a ", mixtral::name(b.family),
            " one; mergekit's Mixtral output takes one family");
    for (const auto& [what, have, want] : {std::tuple{"hidden_size", x.hidden_size, b.hidden_size},
                                           std::tuple{"intermediate_size", x.intermediate_size, b.intermediate_size},
                                           std::tuple{"num_hidden_layers", x.num_layers, b.num_layers}})
      require(have == want, ErrorCode::shape_mismatch, role, " (", c.experts[i].source_model, ") has ", what, " ", have,
              ", base_model ", want, ": every expert must have the base's shape");
  }
  const mixtral::Config& bc = base.config;
  const index_t L = bc.num_layers, E = index_t(c.experts.size()), H = bc.hidden_size, I = bc.intermediate_size;
  const std::optional<DType> out_dtype = c.dtype ? c.dtype : bc.dtype;
  const auto dtype_of = [&](const io::TensorView& t) { return out_dtype.value_or(t.dtype); };

  const bool drawn = c.gate_mode == GateMode::random || c.gate_mode == GateMode::uniform_random;
  require(o.router_weights || drawn || o.tokenizer.encode, ErrorCode::invalid_argument, "gate_mode ", name(c.gate_mode),
          " tokenises the prompts with the base model's tokenizer, and none was given (", base.dir.string(),
          " needs a tokenizer.model)");
  const std::vector<Eigen::MatrixXf> gates = o.router_weights ? gates_from_file(*o.router_weights, L, E, H)
                                             : drawn          ? drawn_gates(c.gate_mode, L, E, H, o.seed)
                                                              : prompt_gates(c, base.dir, o.tokenizer);
  MergeReport report;
  report.layers = L;
  report.experts = E;
  for (index_t l = 0; l < L; ++l) {
    report.gate_condition.push_back(condition_number(gates[std::size_t(l)]));
    if (report.gate_condition.back() > 5.0) report.degenerate_layers.push_back(l);
  }

  io::ShardedWriter w(o.max_shard_bytes);
  w.set_metadata("format", "pt");
  MergeProgress progress;
  // Every output tensor: produced when its shard is written, then counted.
  const auto add = [&](const std::string& name, DType dtype, std::vector<index_t> shape,
                       io::SafeTensorsWriter::Fill fill) {
    const std::size_t bytes = std::size_t(checked::numel(shape, name)) * std::size_t(size_of(dtype));
    ++progress.tensors;
    progress.bytes += bytes;
    w.add(name, dtype, std::move(shape), [&progress, &o, bytes, fill = std::move(fill)](unsigned char* dst) {
      fill(dst);
      ++progress.tensors_done;
      progress.bytes_done += bytes;
      if (o.on_progress) o.on_progress(progress);
    });
  };
  // A tensor copied from a source, converted, optionally edited per value.
  const auto copy = [&](const std::string& out_name, const io::TensorView& t,
                        std::function<float(index_t, float)> edit = {}) {
    const DType to = dtype_of(t);
    add(out_name, to, t.shape, [&t, to, edit = std::move(edit)](unsigned char* dst) {
      detail::convert(t.data, t.dtype, t.numel(), to, dst, edit);
    });
  };
  const auto& bt = base.checkpoint;
  copy(mixtral::names::embed, bt.tensor(mixtral::names::embed));
  for (index_t l = 0; l < L; ++l) {
    const std::string p = mixtral::names::layer(l);
    for (const char* n : {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight"})
      copy(p + n, bt.tensor(p + n));
    const DType gate_dtype = out_dtype.value_or(bt.tensor(p + "self_attn.q_proj.weight").dtype);
    const std::string router_name =
        o.layout == ExpertLayout::per_expert ? mixtral::names::router(l) : mixtral::names::fused_router(l);
    add(router_name, gate_dtype, {E, H}, [&gates, l, E, H, gate_dtype](unsigned char* dst) {
      const Eigen::MatrixXf& g = gates[std::size_t(l)];
      for (index_t e = 0; e < E; ++e)
        for (index_t h = 0; h < H; ++h)
          moe::detail::store_as(gate_dtype, g(e, h), dst + std::size_t(e * H + h) * std::size_t(size_of(gate_dtype)));
    });
    // Expert e's FFN matrices as (source tensor, edit): noise_scale on all
    // three, residual_scale on down_proj, each step rounded to the source's
    // dtype as mergekit computes it in the tensor's own dtype.
    struct Piece {
      const io::TensorView* t;
      std::function<float(index_t, float)> edit;
    };
    const auto piece = [&](index_t e, const char* from) {
      const ExpertSource& src = c.experts[std::size_t(e)];
      const io::TensorView& t = experts[std::size_t(e)]->checkpoint.tensor(mixtral::names::mlp(l, from));
      const bool down = std::string(from) == "down_proj";
      if (!src.noise_scale && !(down && src.residual_scale)) return Piece{&t, {}};
      const float noise = float(src.noise_scale.value_or(0.0));
      const float scale = down ? float(src.residual_scale.value_or(1.0)) : 1.0f;
      const std::uint64_t id = std::uint64_t((l * E + e) * 3) + (down ? 1 : std::string(from) == "up_proj" ? 2 : 0);
      return Piece{&t, [noise, scale, seed = o.seed, id, dtype = t.dtype](index_t i, float v) {
                     if (noise != 0.0f)
                       v = detail::round_to(
                           dtype, v + detail::round_to(dtype, noise * normal({seed, id}, RngStream::merge_noise,
                                                                             std::uint64_t(i), 0)));
                     return detail::round_to(dtype, v * scale);
                   }};
    };
    if (o.layout == ExpertLayout::per_expert) {
      for (index_t e = 0; e < E; ++e)
        for (const auto& [from, to] : {std::pair{"gate_proj", "w1"}, {"down_proj", "w2"}, {"up_proj", "w3"}}) {
          Piece x = piece(e, from);
          copy(mixtral::names::expert(l, e, to), *x.t, std::move(x.edit));
        }
      continue;
    }
    // transformers 5's fused layout: [E, 2I, H] (gate rows, then up rows,
    // per expert) and [E, H, I]; every expert converted into its slot.
    const auto fused = [&](const std::string& out_name, std::vector<const char*> parts, std::vector<index_t> shape) {
      std::vector<Piece> pieces;
      for (index_t e = 0; e < E; ++e)
        for (const char* part : parts) pieces.push_back(piece(e, part));
      const DType to = dtype_of(*pieces.front().t);
      add(out_name, to, std::move(shape), [pieces = std::move(pieces), to](unsigned char* dst) {
        for (const Piece& x : pieces) {
          detail::convert(x.t->data, x.t->dtype, x.t->numel(), to, dst, x.edit);
          dst += std::size_t(x.t->numel()) * std::size_t(size_of(to));
        }
      });
    };
    fused(mixtral::names::fused_gate_up(l), {"gate_proj", "up_proj"}, {E, 2 * I, H});
    fused(mixtral::names::fused_down(l), {"down_proj"}, {E, H, I});
  }
  copy(mixtral::names::final_norm, bt.tensor(mixtral::names::final_norm));
  if (const io::TensorView* head = bt.find(mixtral::names::lm_head); head && !bc.tie_word_embeddings)
    copy(mixtral::names::lm_head, *head);

  std::filesystem::create_directories(out_dir);
  w.write(out_dir, [&](std::size_t i, const std::string& file) {
    if (o.on_shard) o.on_shard(i, w.shard_count(), file);
  });
  {
    std::ofstream cfg(out_dir / "config.json");
    cfg << merged_config(io::read_json(base.dir / "config.json"), E, c.experts_per_token, out_dtype).dump(2) << "\n";
    require(bool(cfg), ErrorCode::bad_file, (out_dir / "config.json").string(), ": write failed");
    std::ofstream yml(out_dir / "mergekit_moe_config.yml", std::ios::binary);
    yml << c.text;
  }
  if (o.copy_tokenizer) {
    for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
      if (std::filesystem::is_regular_file(base.dir / f))
        std::filesystem::copy_file(base.dir / f, out_dir / f, std::filesystem::copy_options::overwrite_existing);
    detail::pad_with_bos(out_dir);
  }
  report.bytes = w.total_bytes();
  report.shards = w.shard_count();
  return report;
}

}  // namespace moe::merge
