// expect: COMPILES
// The harness's control: a correct use must compile with the same flags, so a
// failure below is the library's diagnostic, not a broken include path.
#include <moe/moe.hpp>
using Layer = moe::MoELayer<moe::Router<moe::TopK<2>>, moe::Expert<moe::SwiGLU>, moe::Dropless, moe::NoLoss>;
static_assert(Layer::top_k == 2);
int main() {}
