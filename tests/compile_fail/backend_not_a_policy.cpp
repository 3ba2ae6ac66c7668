// expect: BackendPolicy
#include <moe/moe.hpp>
using Layer = moe::MoELayer<moe::Router<moe::TopK<2>>, moe::Expert<moe::SwiGLU>, moe::Dropless, moe::NoLoss, int>;
int main() { return Layer::top_k; }
