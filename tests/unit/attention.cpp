// backend::Cpu's blocked attention against moe::attend_reference on every
// ISA this build carries: causal and sliding window, GQA and MHA, a ring
// cache that has wrapped, one token (decode) and many (prefill), head sizes
// that are and are not multiples of the vector width; bitwise the same
// whatever the thread count; bad problems are moe::Errors.
#include "test_support.hpp"

#include <moe/backend/cpu.hpp>
#include <moe/core/attention.hpp>
#include <moe/models/mixtral/kv_cache.hpp>

using namespace moe;

namespace {

template <class F, class... I>
void for_each(F&& f, isa::List<I...>) {
  (f(I{}), ...);
}

/// A problem of S new rows at positions first.. over a cache of the
/// positions before them (a ring of `window` entries when windowed).
struct Case {
  AttentionShape shape;
  index_t cached = 0;  ///< positions already in the cache
  index_t S = 1;
};

struct Built {
  Matrix q, k, v;
  mixtral::LayerKvCache cache;
  std::vector<index_t> positions;
  std::vector<KeyValueRun> runs;
  AttentionProblem problem(MatrixView<float> context) const {
    return {.shape = shape, .q = q, .first = first, .runs = runs, .kv_stride = k.cols(), .context = context};
  }
  AttentionShape shape;
  index_t first = 0;
};

Built build(const Case& c, std::uint64_t seed) {
  const AttentionShape& s = c.shape;
  const index_t width = s.num_kv_heads * s.head_dim;
  Built b{.q = random_normal_matrix(c.S, s.num_heads * s.head_dim, seed),
          .k = random_normal_matrix(c.S, width, seed + 1),
          .v = random_normal_matrix(c.S, width, seed + 2),
          .cache = mixtral::LayerKvCache(width, s.window),
          .positions = {},
          .runs = {},
          .shape = s,
          .first = c.cached};
  const Matrix old_k = random_normal_matrix(std::max<index_t>(c.cached, 1), width, seed + 3);
  const Matrix old_v = random_normal_matrix(std::max<index_t>(c.cached, 1), width, seed + 4);
  for (index_t p = 0; p < c.cached; ++p) b.cache.append(p, old_k.row(p).data(), old_v.row(p).data());
  for (index_t t = 0; t < c.S; ++t) b.positions.push_back(c.cached + t);
  b.runs = b.cache.runs();
  b.runs.push_back({b.k.data(), b.v.data(), b.positions.data(), c.S});
  return b;
}

Matrix reference_context(const Built& b) {
  Matrix out(b.q.rows(), b.q.cols());
  attend_reference(b.problem(out));
  return out;
}

const Case cases[] = {
    {{4, 2, 8, std::nullopt}, 0, 7},       // head 8: below one AVX-512 vector
    {{32, 8, 128, std::nullopt}, 0, 70},   // Mixtral's heads, several key blocks, a partial query block
    {{32, 8, 128, std::nullopt}, 300, 1},  // decode over a cache
    {{8, 8, 64, std::nullopt}, 5, 33},     // MHA (group of one)
    {{6, 2, 18, 5}, 9, 12},                // head 18: a scalar tail; a wrapped ring of 5
    {{4, 1, 32, 50}, 0, 130},              // a window shorter than the call: early keys leave it
    {{4, 2, 40, 64}, 100, 1},              // decode on a full ring
    {{2, 1, 16, 3}, 2, 2},
};

}  // namespace

TEST_CASE("cpu attention equals the reference on every ISA (causal, window, GQA, ring, decode)") {
  for (const Case& c : cases) {
    CAPTURE(c.shape.num_heads);
    CAPTURE(c.shape.num_kv_heads);
    CAPTURE(c.shape.head_dim);
    CAPTURE(c.shape.window.value_or(0));
    CAPTURE(c.cached);
    CAPTURE(c.S);
    const Built b = build(c, std::uint64_t(c.S * 31 + c.cached));
    const Matrix expected = reference_context(b);
    REQUIRE(expected.allFinite());
    for_each(
        [&](auto i) {
          using I = decltype(i);
          if (int(isa::cpu_level()) < I::level) return;
          CAPTURE(I::name);
          Matrix got(b.q.rows(), b.q.cols());
          backend::Cpu<numerics::AsStored, I>(2).attend(b.problem(got));
          // fp32 rounding of sums of a few hundred terms of size ~1
          CHECK(test::max_abs_diff(got, expected) <= 2e-5f);
        },
        isa::Carried{});
  }
}

TEST_CASE("cpu attention: the same bits for 1, 2, 3 and 7 threads (prefill and decode)") {
  for (const Case& c : {Case{{32, 8, 64, 96}, 150, 80}, Case{{32, 8, 64, std::nullopt}, 700, 1}}) {
    CAPTURE(c.S);
    const Built b = build(c, 5);
    Matrix one(b.q.rows(), b.q.cols());
    backend::Cpu<>(1).attend(b.problem(one));
    for (int threads : {2, 3, 7}) {
      CAPTURE(threads);
      Matrix other(b.q.rows(), b.q.cols());
      backend::Cpu<>(threads).attend(b.problem(other));
      CHECK(other == one);
    }
  }
}

TEST_CASE("a ring cache gives its entries as runs, oldest first") {
  mixtral::LayerKvCache cache(1, 4);
  for (index_t p = 0; p < 6; ++p) {
    const float k = float(p), v = -float(p);
    cache.append(p, &k, &v);
  }
  const std::vector<KeyValueRun> runs = cache.runs();  // ring of 4 holding 2 3 | 4 5
  REQUIRE(runs.size() == 2);
  CHECK(runs[0].count == 2);
  CHECK(runs[0].positions[0] == 2);
  CHECK(runs[0].keys[1] == 3.0f);
  CHECK(runs[1].count == 2);
  CHECK(runs[1].positions[1] == 5);
  CHECK(runs[1].values[0] == -4.0f);
  mixtral::LayerKvCache unbounded(1, std::nullopt);
  CHECK(unbounded.runs().empty());
}

TEST_CASE("bad attention problems are moe::Errors naming what is wrong") {
  const Built b = build({{4, 2, 8, std::nullopt}, 3, 2}, 1);
  Matrix small(2, 16);
  test::require_error([&] { attend(backend::Cpu<>(1), b.problem(small)); }, ErrorCode::shape_mismatch,
                      {"expected q and context [S, 32]", "context [2, 16]"});
  Matrix out(2, 32);
  AttentionProblem p = b.problem(out);
  p.kv_stride = 8;
  test::require_error([&] { attend(backend::Reference{}, p); }, ErrorCode::shape_mismatch, {"expected at least 16"});
  std::vector<index_t> backwards = {4, 3};
  std::vector<KeyValueRun> runs = b.runs;
  runs.back().positions = backwards.data();
  p = b.problem(out);
  p.runs = runs;
  test::require_error([&] { attend(backend::Cpu<>(1), p); }, ErrorCode::invalid_argument,
                      {"key positions must increase, got 3 after 4"});
  p = b.problem(out);
  p.shape.num_kv_heads = 3;
  test::require_error([&] { attend(backend::Cpu<>(1), p); }, ErrorCode::invalid_argument,
                      {"positive multiple of kv heads"});
}
