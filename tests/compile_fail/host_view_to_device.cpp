// expect: MatrixView
// A host view handed where device memory is expected: memory spaces are
// part of the view's type, so the mistake does not compile.
#include <moe/moe.hpp>
void device_kernel(moe::MatrixView<const float, moe::memory::Device>) {}
int main() {
  moe::Matrix x(2, 2);
  device_kernel(moe::MatrixView<const float>(x));
}
