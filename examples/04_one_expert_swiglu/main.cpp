// 04: One expert: SwiGLU.
//
// Each Mixtral expert is a gated feed-forward network (Shazeer 2020):
//   expert(x) = w2 · ( silu(w1 · x) ⊙ (w3 · x) ),   silu(z) = z · sigmoid(z)
// w1 ("gate") and w3 ("up") map d_model → d_ff, w2 ("down") maps back.
// Switch/T5 experts are the plain two-matrix MLP wo · relu(wi · x).
//
// moe::Expert<SwiGLU>::apply is the one-token reference; here it is checked
// against the same maths in three lines of Eigen. Weights are views: the
// expert reads memory it does not own, in fp32, bf16 or fp16.
#include <moe/moe.hpp>

#include "../check.hpp"

int main() {
  const int d = 16, f = 40;
  const moe::LayerConfig config{.d_model = d, .d_ff = f, .num_experts = 1};
  const moe::WeightStore store = moe::WeightStore::random(config, true, moe::DType::F32, 3);
  const moe::ExpertWeights w = store.view().experts[0];
  moe::Matrix x(1, d);
  for (int i = 0; i < d; ++i) x(0, i) = std::sin(float(i));

  moe::Matrix y(1, d);
  moe::Expert<moe::SwiGLU>::apply(w, x.data(), y.data());

  // The same expert with Eigen: map the weight views as matrices.
  using Map = Eigen::Map<const moe::Matrix>;
  const Map w1(static_cast<const float*>(w.gate.data), f, d), w3(static_cast<const float*>(w.up.data), f, d),
      w2(static_cast<const float*>(w.down.data), d, f);
  const Eigen::RowVectorXf gate = x * w1.transpose(), up = x * w3.transpose();
  const Eigen::RowVectorXf h = gate.unaryExpr([](float z) { return z / (1 + std::exp(-z)); }).cwiseProduct(up);
  const Eigen::RowVectorXf eigen_y = h * w2.transpose();

  const float diff = (y.row(0) - eigen_y).cwiseAbs().maxCoeff();
  std::printf("SwiGLU expert, d_model %d, d_ff %d: max |moe − Eigen| = %.2e\n", d, f, diff);
  example::expect(diff < 1e-5f, "Expert<SwiGLU> equals w2(silu(w1 x) ⊙ w3 x)");

  // The same expert stored in bf16: a view of half the bytes, same maths.
  const moe::WeightStore bf = moe::WeightStore::random(config, true, moe::DType::BF16, 3);
  moe::Matrix ybf(1, d);
  moe::Expert<moe::SwiGLU>::apply(bf.view().experts[0], x.data(), ybf.data());
  const float bf_diff = (ybf - y).cwiseAbs().maxCoeff() / y.cwiseAbs().maxCoeff();
  std::printf("bf16 weights: relative difference %.2e (bf16 keeps 8 bits of mantissa)\n", bf_diff);
  example::expect(bf_diff > 0 && bf_diff < 3e-2f, "bf16 weights give the fp32 result to bf16 precision");
  return example::verdict();
}
