#pragma once
/// \file numerics.hpp
/// What arithmetic a backend's expert kernels do, named in the type:
/// `backend::Cpu<numerics::Int8>` is a different backend from
/// `backend::Cpu<>`, not the same one with a flag. Routing (logits,
/// softmax, top-k, combine weights) is fp32 in every mode, so the experts
/// each token goes to are the same whatever the numerics.
///
/// Error bounds of one MoE layer, as max|y − y_golden| / max(1, max|y_golden|)
/// (tested on the golden moe_block and switch cases by test-golden and on
/// random layers by test-numerics; worst seen on the golden layer cases in
/// brackets):
///   AsStored     ≤ 1e-5   [6e-7]  fp32 rounding only
///   Bf16Compute  ≤ 1e-2   [7e-3]  activations rounded to bf16: 8 significant bits
///   Int8         ≤ 6e-2   [5e-2]  8-bit weights per row, 7-bit activations per token
///   BlockQ8      as AsStored on fp weights; on block weights, against the
///                same weights in fp32: the activations' 8-bit rounding
///                (≤ 1/254 of each block's largest value per element)
/// backend::Cuda takes AsStored (fp32 GEMMs on widened weights) and
/// Bf16Compute (tensor cores) with the same bounds.
/// Through a whole decoder the errors compound and greedy tokens may differ
/// from the fp32 model's; that is the trade, not a defect.

#include <concepts>

namespace moe::numerics {

/// Weights in their stored dtype (F32, BF16 or F16), widened to fp32 in
/// registers; fp32 activations, fp32 accumulation. bf16 weights with fp32
/// activations match the golden cases at their 1e-5 tolerance.
struct AsStored {
  static constexpr const char* name = "as-stored";
};

/// bf16 × bf16 products accumulated in fp32, what `vdpbf16ps`, PyTorch and
/// oneDNN compute: weights rounded to bf16 when packed (no-op for bf16
/// checkpoints), activations rounded to bf16 (nearest even) as they are laid
/// out for the kernel, the hidden activations between the two halves too.
struct Bf16Compute {
  static constexpr const char* name = "bf16-compute";
};

/// w8a8 (LLM.int8/SmoothQuant-style, as QMoE-style compression motivates):
/// weights int8 with one fp32 scale per output row (symmetric, ±127),
/// activations quantised per token to 7-bit unsigned with a zero point
/// (asymmetric, 0 … 127: the AVX2 path multiplies u8 × s8 pairs into int16,
/// which 8-bit activations could overflow; oneDNN halves the weights
/// instead), int32 accumulation, dequantised in the kernel's epilogue.
struct Int8 {
  static constexpr const char* name = "int8";
};

/// Block-quantised weights (a GGUF's Q4_0 … Q6_K) times activations
/// quantised per block as llama.cpp's CPU backend quantises them (Q8_0,
/// Q8_1 or Q8_K, whichever the weight format pairs with), integer dot
/// products scaled per block: llama.cpp's arithmetic, so logits follow
/// llama.cpp's on the same file (moe/quant/q8_activations.hpp). Weights
/// that are not block-quantised (F32, F16, BF16) run as AsStored.
struct BlockQ8 {
  static constexpr const char* name = "block-q8";
};

template <class N>
concept Numerics = requires {
  { N::name } -> std::convertible_to<const char*>;
};

}  // namespace moe::numerics
