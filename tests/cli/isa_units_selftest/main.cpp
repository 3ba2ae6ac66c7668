#include <cstdio>
#include "shared.hpp"
float from_avx512_unit(const std::vector<float>&);
int main() {
  std::vector<float> v(1000, 1.5f);
  std::printf("%g\n", sum_of_squares(v) + from_avx512_unit(v));
}
