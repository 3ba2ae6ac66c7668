#pragma once
// Helpers shared by the unit tests: seeded inputs and error assertions.

#include <doctest/doctest.h>

#include <moe/moe.hpp>

#include <string>

namespace moe::test {

/// Runs f and checks it throws moe::Error with this code and a message
/// containing every fragment.
template <class F>
void require_error(F&& f, ErrorCode code, std::initializer_list<std::string> fragments) {
  try {
    f();
    FAIL("expected moe::Error(", to_string(code), ")");
  } catch (const Error& e) {
    CHECK_MESSAGE(e.code() == code, "code ", to_string(e.code()), ": ", e.what());
    for (const auto& frag : fragments)
      CHECK_MESSAGE(std::string(e.what()).find(frag) != std::string::npos, "message '", e.what(), "' lacks '", frag,
                    "'");
  }
}

inline float max_abs_diff(const Matrix& a, const Matrix& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return a.size() == 0 ? 0.0f : (a - b).cwiseAbs().maxCoeff();
}

}  // namespace moe::test
