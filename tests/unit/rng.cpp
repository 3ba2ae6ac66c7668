// The counter-based generator: known-answer vectors, ranges, statistics.
#include "test_support.hpp"

using namespace moe;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors") {
  using A4 = std::array<std::uint32_t, 4>;
  CHECK(detail::philox4x32_10({0, 0, 0, 0}, {0, 0}) == A4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(detail::philox4x32_10({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}) ==
        A4{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  CHECK(detail::philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}) ==
        A4{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("draws are pure functions of (seed, step, stream, row, column)") {
  const RngKey key{42, 7};
  CHECK(uniform(key, RngStream::jitter, 3, 4) == uniform(key, RngStream::jitter, 3, 4));
  CHECK(uniform(key, RngStream::jitter, 3, 4) != uniform(key, RngStream::jitter, 4, 3));
  CHECK(uniform(key, RngStream::jitter, 3, 4) != uniform(key, RngStream::gshard_second, 3, 4));
  CHECK(uniform(key, RngStream::jitter, 3, 4) != uniform({42, 8}, RngStream::jitter, 3, 4));
  CHECK(uniform(key, RngStream::jitter, 3, 4) != uniform({43, 7}, RngStream::jitter, 3, 4));
  // Steps beyond 2^32 must not alias small steps.
  CHECK(uniform({1, 5}, RngStream::jitter, 0, 0) != uniform({1, 5 + (1ull << 32)}, RngStream::jitter, 0, 0));
}

TEST_CASE("uniform is in [0, 1) and normal has mean 0, variance 1") {
  const int n = 200000;
  double sum = 0, sq = 0, usum = 0;
  float umin = 1, umax = 0;
  for (int i = 0; i < n; ++i) {
    const float u = uniform({5, 0}, RngStream::user, std::uint64_t(i), 0);
    umin = std::min(umin, u);
    umax = std::max(umax, u);
    usum += u;
    const double z = normal({5, 0}, RngStream::user, std::uint64_t(i), 1);
    sum += z;
    sq += z * z;
  }
  CHECK(umin >= 0.0f);
  CHECK(umax < 1.0f);
  CHECK(usum / n == doctest::Approx(0.5).epsilon(0.01));
  CHECK(std::abs(sum / n) < 0.01);  // 4.5 standard errors
  CHECK(sq / n == doctest::Approx(1.0).epsilon(0.015));
}
