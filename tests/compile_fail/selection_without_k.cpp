// expect: SelectionPolicy
// A selection policy that forgets `static constexpr int k`.
#include <moe/moe.hpp>
struct NoK {
  void select(const float*, moe::index_t, std::int32_t*) const {}
  void thin(const moe::RouteContext&, moe::index_t, std::int32_t*, float*) const {}
};
moe::Router<NoK> router;
int main() {}
