#pragma once
/// \file gguf_quant_mix.hpp
/// Which ggml type each matrix of a GGUF file gets, for a file type such as
/// q4_k_m: llama-quantize's choices (llama.cpp's llama_tensor_get_type, no
/// importance matrix), so that a file written here holds the same types, and
/// the same bytes, as llama-quantize makes of the same weights.
///
/// A "mix" names a base type for most matrices, and rules that spend more
/// bits where quantisation error hurts most: the output projection (Q6_K),
/// the value projections and down projections of the first and last eighth
/// of the layers and every third one between (use_more_bits), and, in a
/// model of 8 experts, the attention's k and v (Q8_0: small next to the
/// experts). Norms and the router stay F32; they are not matrices here.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/gguf.hpp"

namespace moe::io {

/// A GGUF file type as llama-quantize names it.
struct QuantMix {
  std::string name;         ///< "q4_k_m"
  std::uint32_t file_type;  ///< general.file_type (llama_ftype)
  std::uint32_t base;       ///< the ggml type of most matrices
};

inline const std::vector<QuantMix>& quant_mixes() {
  static const std::vector<QuantMix> all = {
      {"f32", 0, 0},      {"f16", 1, 1},      {"bf16", 32, 30},   {"q8_0", 7, 8},     {"q5_1", 9, 7},
      {"q5_0", 8, 6},     {"q4_1", 3, 3},     {"q4_0", 2, 2},     {"q6_k", 18, 14},   {"q5_k_m", 17, 13},
      {"q5_k_s", 16, 13}, {"q4_k_m", 15, 12}, {"q4_k_s", 14, 12}, {"q3_k_l", 13, 11}, {"q3_k_m", 12, 11},
      {"q3_k_s", 11, 11}, {"q2_k", 10, 10}};
  return all;
}

/// The mix called `name` (lower case, as llama-quantize's argument).
inline const QuantMix& quant_mix(std::string_view name) {
  std::string known;
  for (const QuantMix& m : quant_mixes()) {
    if (m.name == name) return m;
    known += (known.empty() ? "" : ", ") + m.name;
  }
  throw Error(ErrorCode::invalid_argument,
              detail::cat("GGUF type '", name, "' is not one this writes; expected one of ", known));
}

/// What a matrix is in the model, as the rules ask.
struct MatrixRole {
  enum Kind { token_embd, output, attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down } kind;
  index_t layer = 0;  ///< 0 for token_embd and output
};

/// What the rules read of the model.
struct MixModel {
  index_t layers = 0;
  index_t heads = 0, kv_heads = 0;
  index_t experts = 1;     ///< 1: dense
  bool has_output = true;  ///< false: tied embeddings (token_embd is also the output projection)
};

/// The ggml type of a matrix with rows of `cols` values.
inline std::uint32_t matrix_type(const QuantMix& mix, const MatrixRole& role, const MixModel& m, index_t cols) {
  constexpr std::uint32_t Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14;
  std::uint32_t t = mix.base;
  if (t == 0 || t == 1 || t == 30) return t;  // F32, F16, BF16: every matrix as it is
  const std::string_view f = mix.name;
  const index_t n = m.layers, i = role.layer;
  // First and last eighth of the layers, and every third one between.
  const bool more_bits = i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
  const index_t gqa = m.kv_heads > 0 ? m.heads / m.kv_heads : 1;
  const bool eight_experts = m.experts == 8;
  const bool is_70b = m.experts == 1 && n == 80 && m.heads != m.kv_heads;  // llama.cpp's LLM_TYPE_70B
  using K = MatrixRole::Kind;
  if (role.kind == K::output || (role.kind == K::token_embd && !m.has_output)) {
    if (cols % 256 != 0)
      t = Q8_0;
    else if (t != Q8_0)
      t = Q6_K;
  } else if (role.kind == K::attn_v) {
    if (f == "q2_k")
      t = gqa >= 4 ? Q4_K : Q3_K;
    else if (f == "q3_k_m")
      t = i < 2 ? Q5_K : Q4_K;
    else if (f == "q3_k_l")
      t = Q5_K;
    else if ((f == "q4_k_m" || f == "q5_k_m") && more_bits)
      t = Q6_K;
    else if (f == "q4_k_s" && i < 4)
      t = Q5_K;
    if (is_70b && (t == Q3_K || t == Q4_K)) t = Q5_K;
    if (eight_experts) t = Q8_0;
  } else if (role.kind == K::attn_k) {
    if (eight_experts) t = Q8_0;
  } else if (role.kind == K::ffn_down) {
    if (f == "q2_k")
      t = Q3_K;
    else if (f == "q3_k_m")
      t = i < n / 16 ? Q5_K : Q4_K;
    else if (f == "q3_k_l")
      t = Q5_K;
    else if (f == "q4_k_m" && more_bits)
      t = Q6_K;
    else if (f == "q5_k_m" && more_bits)
      t = Q6_K;
    else if (f == "q4_k_s" && i < n / 8)
      t = Q5_K;
  } else if (role.kind == K::attn_output) {
    if (eight_experts) {
      if (f == "q2_k" || f == "q3_k_s" || f == "q3_k_m" || f == "q4_k_s" || f == "q4_k_m") t = Q5_K;
    } else if (f == "q2_k") {
      t = Q3_K;
    } else if (f == "q3_k_m") {
      t = Q4_K;
    } else if (f == "q3_k_l") {
      t = Q5_K;
    }
  }
  // Rows that are not whole blocks of the chosen type: llama.cpp's fallbacks.
  const gguf::TypeTraits chosen = *gguf::traits(t);
  if (cols % chosen.block != 0) {
    switch (t) {
      case Q4_K:
        t = Q5_0;
        break;
      case Q5_K:
        t = Q5_1;
        break;
      case Q6_K:
        t = Q8_0;
        break;
      case 10:  // Q2_K
      case Q3_K:
        throw Error(
            ErrorCode::unsupported,
            detail::cat("a matrix with rows of ", cols, " values cannot be ", chosen.name,
                        " (256 per block); llama.cpp writes such rows as IQ4_NL, which is not written here yet;",
                        " use q4_k_s or above"));
      default:
        break;
    }
    if (cols % gguf::traits(t)->block != 0) t = 1;  // F16
  }
  return t;
}

}  // namespace moe::io
