// expect: FFN
// Expert<F> takes an FFN (SwiGLU, GeGLU, MLP<Act>), not an activation.
#include <moe/moe.hpp>
moe::Expert<moe::SiLU> wrong;
int main() {}
