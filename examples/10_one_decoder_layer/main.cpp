// 10: One Mixtral decoder layer, step by step.
//
// A Mixtral layer is two residual blocks:
//   x = x + Attention(RMSNorm(x))      grouped-query attention with RoPE
//   x = x + SparseMoE(RMSNorm(x))      router picks 2 of E SwiGLU experts per token
// This walks layer 0 of a tiny checkpoint one step at a time with the
// library's pieces, and compares every intermediate with the values an
// independent implementation stored (tests/data/golden/models).
#include <moe/moe.hpp>

#include "../check.hpp"

namespace mx = moe::mixtral;

namespace {
const moe::io::SafeTensors* golden = nullptr;

/// Compares a [rows, cols] result with the golden tensor of that name.
void compare(const moe::Matrix& m, const std::string& name, const char* what) {
  const std::vector<float> g = golden->tensor(name).to_vector<float>();
  double err = 0, scale = 1;
  for (std::size_t i = 0; i < g.size(); ++i) {
    err = std::max(err, double(std::abs(m.data()[i] - g[i])));
    scale = std::max(scale, double(std::abs(g[i])));
  }
  std::printf("  %-46s max error %.1e\n", name.c_str(), err / scale);
  example::expect(err / scale <= 1e-5, what);
}
}  // namespace

int main() {
  const std::filesystem::path dir = std::filesystem::path(MOE_GOLDEN_DIR) / "models" / "mixtral_tiny_f32";
  const moe::io::SafeTensors expected(dir / "expected.safetensors");
  golden = &expected;

  // The checkpoint: config.json says the shapes, the safetensors hold the weights.
  const mx::Config c = mx::load_config(dir);
  const moe::io::Checkpoint checkpoint(dir);
  const mx::Weights w = mx::load_weights(checkpoint, c);  // views, checked against the config
  const mx::DecoderLayerWeights& layer = w.layers[0];
  std::printf("hidden %lld, %lld query heads sharing %lld kv heads of %lld, %lld experts top-%lld\n",
              (long long)c.hidden_size, (long long)c.num_heads, (long long)c.num_kv_heads, (long long)c.head_dim,
              (long long)c.num_experts, (long long)c.experts_per_token);

  // 1. Embedding: row `id` of embed_tokens, no scaling.
  const auto ids = expected.tensor("input_ids").to_vector<std::int32_t>();
  const moe::index_t S = moe::index_t(ids.size()), H = c.hidden_size;
  moe::Matrix x(S, H);
  for (moe::index_t t = 0; t < S; ++t)
    for (moe::index_t i = 0; i < H; ++i) x(t, i) = w.embed.at(ids[std::size_t(t)], i);
  compare(x, "embeddings", "embedding lookup");

  // 2. Attention block: RMSNorm, then q/k/v projections, RoPE on q and k,
  //    causal softmax(q·kᵀ/sqrt(hd))·v per head (query head h reads kv head
  //    h / (heads / kv_heads)), o_proj. A fresh KV cache: this is the prefill.
  moe::Matrix normed(S, H), attn(S, H);
  mx::rms_norm(x, layer.input_norm, c.rms_norm_eps, normed);
  const mx::RopeTable rope(c.rope_theta, c.head_dim, 0, S);
  mx::LayerKvCache cache(c.kv_width(), c.sliding_window);
  const moe::backend::Reference backend;
  mx::attention(backend, normed, {layer.q, layer.k, layer.v, layer.o},
                {c.num_heads, c.num_kv_heads, c.head_dim, c.sliding_window}, rope, 0, cache, attn);
  compare(attn, "layers.0.attn_out", "attention output");
  x += attn;  // residual
  std::printf("  the KV cache now holds %lld positions for the next token to read\n", (long long)cache.size());

  // 3. Sparse MoE block: RMSNorm, router logits x·gateᵀ, top-2, softmax over
  //    the two chosen logits, the two experts' SwiGLU outputs weighted.
  mx::rms_norm(x, layer.post_norm, c.rms_norm_eps, normed);
  const auto moe_block = moe::make_layer<moe::presets::Mixtral, moe::backend::Reference>(
      {.d_model = H, .d_ff = c.intermediate_size, .num_experts = c.num_experts}, layer.moe);
  const moe::Output out = moe_block.forward(normed);
  compare(Eigen::Map<const moe::Matrix>(out.routing.logits.data(), S, c.num_experts), "layers.0.router_logits",
          "router logits");
  std::printf("  token 0 goes to experts %d and %d with weights %.3f and %.3f\n", out.routing.expert_at(0, 0),
              out.routing.expert_at(0, 1), out.routing.weight_at(0, 0), out.routing.weight_at(0, 1));
  compare(out.y, "layers.0.moe_out", "sparse MoE output");
  x += out.y;  // residual
  compare(x, "layers.0.hidden_out", "layer output (residual stream)");

  // 4. The whole model does this per layer, then a final RMSNorm and lm_head;
  //    mx::Model runs it all (and keeps a KV cache per layer for decoding).
  const mx::Model<moe::backend::Reference> model(dir);
  mx::KvCache kv = model.new_cache();
  mx::Trace trace;
  const mx::StepOutput full = model.forward(ids, kv, mx::Logits::all, &trace);
  example::expect(trace.layers[0].hidden_out == x, "mx::Model's layer 0 computes exactly these steps");
  compare(full.logits, "logits", "logits of the whole model");
  return example::verdict();
}
