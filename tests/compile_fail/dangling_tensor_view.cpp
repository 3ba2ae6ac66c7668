// expect: deleted
// A tensor view of a temporary file would point into an unmapped file: tensor() on an rvalue is deleted.
#include <moe/moe.hpp>
int main() {
  const moe::io::TensorView& w = moe::io::SafeTensors("model.safetensors").tensor("w");
  (void)w;
}
