// expect: BalanceLossPolicy
#include <moe/moe.hpp>
struct NotALoss {};
using Layer = moe::MoELayer<moe::Router<moe::TopK<2>>, moe::Expert<moe::SwiGLU>, moe::Dropless, NotALoss>;
Layer* layer = nullptr;
int main() { return Layer::top_k; }
