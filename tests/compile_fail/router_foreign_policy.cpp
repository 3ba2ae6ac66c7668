// expect: no matching function for call to ‘moe::Router<moe::TopK<2> >::Router(moe::Jitter)’
// The router takes its own policies only: Jitter is not Router<TopK<2>>'s noise (NoNoise),
// so passing one is an error, not a silently ignored argument.
#include <moe/moe.hpp>
int main() {
  const moe::Router<moe::TopK<2>> router(moe::Jitter{.eps = 0.01f});
  (void)router;
}
