// expect: to non-scalar type ‘moe::MatrixView<float>’ requested
// A writable view of a const matrix does not compile (a const view does).
#include <moe/moe.hpp>
int main() {
  const moe::Matrix x = moe::Matrix::Zero(4, 4);
  moe::MatrixView<const float> reads = x.topRows(2);  // fine
  moe::MatrixView<float> writes = x;
  (void)reads;
  (void)writes;
}
