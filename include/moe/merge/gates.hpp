#pragma once
/// \file gates.hpp
/// The router rows of a frankenMoE, one [E, H] matrix per layer, as
/// mergekit-moe initialises them (its moe/router.py). Each expert's row says
/// which hidden states should go to it:
///
///   hidden          run the base model on the expert's prompts; per layer l,
///                   the residual stream entering layer l at each prompt's
///                   last token, averaged over the prompts
///   hidden_avg      the same, averaged over every position of the
///                   left-padded batch, pads included (see pad_states)
///   cheap_embed     the sum of the prompts' token embeddings, normalised;
///                   the same row for every layer
///   random          N(0, 1), unscaled
///   uniform_random  U(-1/sqrt(H), 1/sqrt(H)), nn.Linear's initialisation
///
/// In the prompt modes the row is normalise(m(positive) − m(negative)), the
/// second term only when the expert has negative prompts; normalise(v) is
/// v / max(‖v‖₂, 1e-8).
///
/// Prompts are token ids as mergekit makes them: BOS, then the text as it
/// follows a special token (PromptTokenizer; sentencepiece_prompts.hpp makes
/// one from a tokenizer.model). mergekit runs the hidden pass in bfloat16;
/// here it runs in float32, so rows agree to bfloat16's precision (cosine
/// above 0.999), and the averaging itself agrees with the same maths in
/// float32 to the last bits.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SVD>

#include "moe/core/rng.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/merge/config.hpp"
#include "moe/models/mixtral/model.hpp"

namespace moe::merge {

/// Token ids of one prompt as mergekit-moe makes them (BOS first), and the
/// id it pads a batch with (BOS, or EOS when there is no BOS).
struct PromptTokenizer {
  std::function<std::vector<std::int32_t>(const std::string&)> encode;
  std::int32_t pad_id = 0;
};

/// A batch of tokenised prompts; mergekit pads it on the left to the longest.
using PromptBatch = std::vector<std::vector<std::int32_t>>;

namespace detail {
/// v / max(‖v‖₂, 1e-8) in float32, the norm summed in double and rounded
/// once (torch sums float32 in its own order: the two may differ by an ulp).
inline Eigen::VectorXf normalized(const Eigen::VectorXf& v) {
  double squares = 0;
  for (float x : v) squares += double(x) * double(x);
  return v / std::max(float(std::sqrt(squares)), 1e-8f);
}

inline index_t longest(const PromptBatch& batch) {
  std::size_t n = 0;
  for (const auto& p : batch) n = std::max(n, p.size());
  return index_t(n);
}
}  // namespace detail

inline PromptBatch tokenize(const std::vector<std::string>& prompts, const PromptTokenizer& tokenizer) {
  moe::detail::require(bool(tokenizer.encode), ErrorCode::invalid_argument,
                       "merge: prompt gates need a tokenizer (PromptTokenizer::encode is empty)");
  PromptBatch batch;
  for (const std::string& p : prompts) batch.push_back(tokenizer.encode(p));
  return batch;
}

/// cheap_embed's vector of one batch: c(P) = normalise(Σ_p Σ_t E[id_pt]),
/// pads excluded, summed in float32 in mergekit's order (each prompt's
/// positions, then the prompts). `embed` is the base's [V, H] embedding.
inline Eigen::VectorXf embedding_direction(const io::TensorView& embed, index_t vocab_size, const PromptBatch& batch) {
  const index_t H = embed.shape.at(1);
  Eigen::VectorXf total = Eigen::VectorXf::Zero(H), prompt(H), row(H);
  for (const auto& ids : batch) {
    prompt.setZero();
    for (const std::int32_t id : ids) {
      moe::detail::require(id >= 0 && id < vocab_size && id < embed.shape.at(0), ErrorCode::invalid_argument,
                           "cheap_embed: prompt token id ", id, " is outside the base model's vocabulary [0, ",
                           vocab_size, ")");
      widen_to_float(embed.data, embed.dtype, index_t(id) * H, H, row.data());
      prompt += row;
    }
    total += prompt;
  }
  return detail::normalized(total);
}

/// The residual stream entering each layer (0 = the embedding) of a token
/// that attends to nothing: a pad position of a left-padded batch, whose
/// attention row is all masked. PyTorch's scaled_dot_product_attention,
/// which transformers uses by default, gives such a row a zero output, so
/// the token passes through the FFNs alone.
template <class B>
std::vector<Eigen::VectorXf> pad_states(const mixtral::Model<B>& model, std::int32_t pad_id) {
  const mixtral::Config& c = model.config();
  const mixtral::Weights& w = model.weights();
  const index_t H = c.hidden_size;
  moe::detail::require(pad_id >= 0 && pad_id < c.vocab_size, ErrorCode::invalid_argument, "hidden_avg: pad token id ",
                       pad_id, " is outside the base model's vocabulary [0, ", c.vocab_size, ")");
  Matrix x(1, H), normed(1, H);
  widen_to_float(w.embed.data, w.embed.dtype, index_t(pad_id) * H, H, x.row(0).data());
  std::vector<Eigen::VectorXf> states;
  typename mixtral::SparseBlock<B>::Layer::workspace_type ws;
  for (index_t l = 0; l < c.num_layers; ++l) {
    states.push_back(Eigen::Map<const Eigen::VectorXf>(x.row(0).data(), H));
    const mixtral::DecoderLayerWeights& lw = w.layers[std::size_t(l)];
    const mixtral::SparseBlock<B> block(
        int(c.experts_per_token),
        {.d_model = H, .d_ff = c.intermediate_size, .num_experts = c.num_experts, .seed = 0, .expert_dropout = 0.0f},
        lw.moe, model.backend());
    mixtral::rms_norm(x, lw.post_norm, c.rms_norm_eps, normed);
    x += block.forward(normed, ws).y;
  }
  return states;
}

/// hidden and hidden_avg's vectors of one batch, per layer: the mean over
/// prompts of the residual stream entering the layer, at the last token
/// (hidden: no `pads`) or summed over all positions of the left-padded batch
/// and divided by its width (hidden_avg: `pads` = pad_states, the same for
/// every batch). float32, mergekit's order.
template <class B>
std::vector<Eigen::VectorXf> mean_hidden_states(const mixtral::Model<B>& model, const PromptBatch& batch,
                                                std::span<const Eigen::VectorXf> pads = {}) {
  const index_t L = model.config().num_layers, H = model.config().hidden_size, width = detail::longest(batch);
  const bool average_positions = !pads.empty();
  moe::detail::require(!average_positions || index_t(pads.size()) == L, ErrorCode::shape_mismatch,
                       "mean_hidden_states: ", pads.size(), " pad states for ", L, " layers");
  std::vector<Eigen::VectorXf> sum(std::size_t(L), Eigen::VectorXf::Zero(H));
  for (const auto& ids : batch) {
    moe::detail::require(!ids.empty(), ErrorCode::invalid_argument, "hidden gates: a prompt with no tokens");
    mixtral::KvCache cache = model.new_cache();
    mixtral::Trace trace;
    (void)model.forward(ids, cache, mixtral::Logits::last, &trace);
    const index_t S = index_t(ids.size()), first_real = width - S;
    for (index_t l = 0; l < L; ++l) {
      const Matrix& stream = l == 0 ? trace.embeddings : trace.layers[std::size_t(l - 1)].hidden_out;
      const auto at = [&](index_t t) { return Eigen::Map<const Eigen::VectorXf>(stream.row(t).data(), H); };
      if (!average_positions) {
        sum[std::size_t(l)] += at(S - 1);
        continue;
      }
      Eigen::VectorXf over_positions = Eigen::VectorXf::Zero(H);
      for (index_t t = 0; t < width; ++t) over_positions += t < first_real ? pads[std::size_t(l)] : at(t - first_real);
      sum[std::size_t(l)] += over_positions / float(width);
    }
  }
  for (auto& s : sum) s /= float(batch.size());
  return sum;
}

/// Router rows of the prompt modes (hidden, hidden_avg, cheap_embed),
/// [L] × [E, H], from the base model in `base_dir`.
inline std::vector<Eigen::MatrixXf> prompt_gates(const MergeConfig& c, const std::filesystem::path& base_dir,
                                                 const PromptTokenizer& tokenizer) {
  const bool cheap = c.gate_mode == GateMode::cheap_embed;
  moe::detail::require(cheap || c.gate_mode == GateMode::hidden || c.gate_mode == GateMode::hidden_avg,
                       ErrorCode::invalid_argument, "prompt_gates: gate_mode ", name(c.gate_mode), " uses no prompts");
  // cheap_embed reads the embedding only; the hidden modes run the model.
  const mixtral::Config config = mixtral::load_config(base_dir);
  const std::optional<io::Checkpoint> checkpoint = cheap ? std::optional<io::Checkpoint>(base_dir) : std::nullopt;
  const std::optional<mixtral::Model<>> model = cheap ? std::nullopt : std::optional<mixtral::Model<>>(base_dir);
  const std::vector<Eigen::VectorXf> pads =  // hidden_avg's pad positions: one pass, for every batch
      c.gate_mode == GateMode::hidden_avg ? pad_states(*model, tokenizer.pad_id) : std::vector<Eigen::VectorXf>{};
  const index_t L = config.num_layers, H = config.hidden_size, E = index_t(c.experts.size());
  // Per layer, the vector of one batch of prompts.
  const auto vectors = [&](const std::vector<std::string>& prompts) {
    const PromptBatch batch = tokenize(prompts, tokenizer);
    if (cheap)
      return std::vector<Eigen::VectorXf>(
          std::size_t(L), embedding_direction(checkpoint->tensor(mixtral::names::embed), config.vocab_size, batch));
    return mean_hidden_states(*model, batch, pads);
  };
  std::vector<Eigen::MatrixXf> gates(std::size_t(L), Eigen::MatrixXf(E, H));
  for (index_t e = 0; e < E; ++e) {
    const ExpertSource& x = c.experts[std::size_t(e)];
    std::vector<Eigen::VectorXf> v = vectors(x.positive_prompts);
    if (!x.negative_prompts.empty()) {
      const std::vector<Eigen::VectorXf> neg = vectors(x.negative_prompts);
      for (index_t l = 0; l < L; ++l) v[std::size_t(l)] -= neg[std::size_t(l)];
    }
    for (index_t l = 0; l < L; ++l) gates[std::size_t(l)].row(e) = detail::normalized(v[std::size_t(l)]).transpose();
  }
  return gates;
}

/// Router rows of the modes that need no model run: random (N(0, 1),
/// unscaled) and uniform_random (U(±1/√H)), counter-based on `seed`, so
/// the same seed gives the same rows on any machine. (mergekit draws from
/// torch's global generator; its values cannot be matched, only their law.)
inline std::vector<Eigen::MatrixXf> drawn_gates(GateMode mode, index_t L, index_t E, index_t H, std::uint64_t seed) {
  moe::detail::require(mode == GateMode::random || mode == GateMode::uniform_random, ErrorCode::invalid_argument,
                       "drawn_gates: gate_mode ", name(mode), " is computed from prompts (prompt_gates)");
  const float bound = 1.0f / std::sqrt(float(H));
  std::vector<Eigen::MatrixXf> gates;
  for (index_t l = 0; l < L; ++l) {
    Eigen::MatrixXf g(E, H);
    for (index_t e = 0; e < E; ++e)
      for (index_t h = 0; h < H; ++h)
        g(e, h) = mode == GateMode::random
                      ? normal({seed, std::uint64_t(l)}, RngStream::merge, std::uint64_t(e), std::uint64_t(h))
                      : bound * (2.0f * uniform({seed, std::uint64_t(l)}, RngStream::merge, std::uint64_t(e),
                                                std::uint64_t(h)) -
                                 1.0f);
    gates.push_back(std::move(g));
  }
  return gates;
}

/// Router rows read from a safetensors file with
/// `model.layers.{l}.block_sparse_moe.gate.weight` [E, H] for every layer.
inline std::vector<Eigen::MatrixXf> gates_from_file(const std::filesystem::path& file, index_t L, index_t E,
                                                    index_t H) {
  const io::SafeTensors f(file);
  std::vector<Eigen::MatrixXf> gates;
  for (index_t l = 0; l < L; ++l) {
    const std::string n = mixtral::names::router(l);
    const io::TensorView* t = f.find(n);
    moe::detail::require(t != nullptr, ErrorCode::bad_file, file.string(), ": no tensor '", n, "' (expected [", E, ", ",
                         H, "])");
    t->expect_shape({E, H});
    Eigen::MatrixXf g(E, H);
    for (index_t e = 0; e < E; ++e)
      for (index_t h = 0; h < H; ++h) g(e, h) = t->matrix().at(e, h);
    gates.push_back(std::move(g));
  }
  return gates;
}

/// Condition number σ_max / σ_min of a router (float32 SVD, as mergekit's
/// torch.linalg.cond); above 5, mergekit warns the layer's prompts may be
/// too similar.
inline double condition_number(const Eigen::MatrixXf& g) {
  const Eigen::JacobiSVD<Eigen::MatrixXf> svd(g);
  const auto& s = svd.singularValues();
  return s.size() == 0 ? 1.0 : double(s(0)) / double(s(s.size() - 1));
}

}  // namespace moe::merge
