// An inline function that a baseline and an AVX-512 unit both compile: one
// symbol, two bodies.
#pragma once
#include <vector>
inline __attribute__((noinline)) float sum_of_squares(const std::vector<float>& v) {
  float s = 0;
  for (float x : v) s += x * x;
  return s;
}
