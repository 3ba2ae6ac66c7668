// expect: to non-scalar type ‘moe::MatrixView<float>’ requested
// A writable view of a temporary matrix would point at freed memory once the statement ends
// (a temporary block or map is fine: it is itself a view of a matrix that lives on).
#include <moe/moe.hpp>
int main() {
  moe::Matrix x = moe::Matrix::Zero(4, 4);
  moe::MatrixView<float> rows = x.topRows(2);  // fine
  moe::MatrixView<float> dangling = moe::Matrix(x);
  (void)rows;
  (void)dangling;
}
