#pragma once
// A tiny self-check helper for the examples: counts failures, prints the
// verdict. Examples are lessons, not tests, but each proves what it claims.
#include <cmath>
#include <cstdio>

namespace example {
inline int failures = 0;
inline void expect(bool ok, const char* what) {
  std::printf("  [%s] %s\n", ok ? "ok" : "FAIL", what);
  if (!ok) ++failures;
}
inline bool near(double a, double b, double tol = 1e-5) { return std::abs(a - b) <= tol * std::max(1.0, std::abs(b)); }
inline int verdict() {
  std::printf("%s\n", failures == 0 ? "PASSED" : "FAILED");
  return failures == 0 ? 0 : 1;
}
}  // namespace example
