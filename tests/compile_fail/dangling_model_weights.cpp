// expect: deleted
// The decoder's weights are views into its mapped checkpoint: a temporary model has none to give.
#include <moe/moe.hpp>
int main() {
  const auto& w = moe::mixtral::Model<>("path/to/folder").weights();
  (void)w;
}
