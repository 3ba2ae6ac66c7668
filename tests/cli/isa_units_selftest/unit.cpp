#include "shared.hpp"
// Built before main runs, on every CPU, with this unit's instructions.
static std::vector<float> table(4096, 0.5f);
__attribute__((visibility("default"))) float from_avx512_unit(const std::vector<float>& v) {
  return sum_of_squares(v) + table[0];
}
