// expect: s.thin(ctx, token, idx, w)
// The idiom the README gives: static_assert on the specific concept names the missing member
// at the compiler's default diagnostic depth (SelectionPolicy, a disjunction of the per-token
// and per-call forms, only says that neither holds).
#include <moe/moe.hpp>
struct TopTwoNoThin {
  static constexpr int k = 2;
  void select(const float* logits, moe::index_t E, std::int32_t* idx) const { moe::top_k_indices(logits, E, k, idx); }
};
static_assert(moe::TokenSelection<TopTwoNoThin>);
int main() {}
