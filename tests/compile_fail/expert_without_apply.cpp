// expect: ExpertPolicy
// An expert policy that names its FFN but cannot be applied to a token
// (backend::Reference runs X::apply): rejected at the concept.
#include <moe/moe.hpp>
struct HalfExpert {
  using ffn = moe::SwiGLU;
  static void validate(const moe::ExpertWeights&, moe::index_t, moe::index_t, moe::index_t) {}
};
using Layer = moe::MoELayer<moe::Router<moe::TopK<2>>, HalfExpert, moe::Dropless, moe::NoLoss>;
Layer* layer = nullptr;
int main() {}
