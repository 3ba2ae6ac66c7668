// The lower-precision numerics of backend::Cpu (numerics.hpp): the int8
// kernel's integer sums, and each mode's error bound against the reference
// with routing unchanged.
#include "test_support.hpp"

#include <cstdint>
#include <vector>

using namespace moe;

TEST_CASE("int8 kernel: integer data quantises exactly, so the product is exact") {
  // Each weight row's largest |w| is 127 (scale 1) and each activation row
  // spans 0 … 127 (scale 1, zero point 0): quantisation is the identity and
  // the dequantised result must equal the exact integer product. Sizes hit
  // every tail: 37 outputs (a partial panel), depth 70 (not a multiple of 4),
  // 11 rows (a full group of 8 and a partial one). Both tile widths the CPU
  // runs: 16 columns (the AVX2 tile and the portable loop, four rows at a
  // time) and, on AVX-512, 32 (eight rows at a time); the dequantised rows
  // through the vector epilogue (dequantize_row) and the scalar one.
  const index_t N = 37, K = 70, n = 11;
  std::vector<float> w(std::size_t(N * K)), a(std::size_t(n * K));
  for (index_t r = 0; r < N; ++r)
    for (index_t k = 0; k < K; ++k) w[std::size_t(r * K + k)] = float((r * 31 + k * 17) % 255 - 127);
  for (index_t r = 0; r < N; ++r) w[std::size_t(r * K + r % K)] = (r % 2) ? 127.0f : -127.0f;
  for (index_t i = 0; i < n; ++i)
    for (index_t k = 0; k < K; ++k) a[std::size_t(i * K + k)] = float((i * 13 + k * 7) % 128);
  for (index_t i = 0; i < n; ++i) {
    a[std::size_t(i * K)] = 0.0f;
    a[std::size_t(i * K + 1)] = 127.0f;
  }
  const WeightMatrix W = weight_view(w.data(), N, K);
  const auto serial = [](index_t count, const auto& fn) {
    for (index_t p = 0; p < count; ++p) fn(p);
  };
  std::vector<index_t> widths{16};
  if constexpr (isa::Native::avx512) widths.push_back(32);
  for (const index_t NR : widths) {
    CAPTURE(NR);
    const backend::cpu::PanelMatrix B = backend::cpu::pack_panels(W, nullptr, NR, DType::I8, serial);
    const auto L = backend::cpu::QuantRows::of(n, K);
    std::vector<std::uint8_t> q(L.bytes());
    std::vector<float> scale(static_cast<std::size_t>(n));
    std::vector<std::int32_t> zero(static_cast<std::size_t>(n));
    backend::cpu::quantize_rows(a.data(), K, L, q.data(), scale.data(), zero.data());
    for (index_t i = 0; i < n; ++i) {
      CHECK(scale[std::size_t(i)] == 1.0f);
      CHECK(zero[std::size_t(i)] == 0);
    }
    const index_t ldc = B.panels * NR;
    std::vector<std::int32_t> c(std::size_t(n * ldc));
    backend::cpu::int8_gemm<isa::Native>(q.data(), L, B, 0, B.panels, c.data(), ldc);
    std::vector<float> row(static_cast<std::size_t>(ldc));
    for (index_t i = 0; i < n; ++i) {
      const std::size_t si = std::size_t(i);
      backend::cpu::dequantize_row<isa::Native>(c.data() + i * ldc, scale[si], zero[si], B.scale.data(), B.sums.data(),
                                                N, row.data());
      for (index_t r = 0; r < N; ++r) {
        double exact = 0;
        for (index_t k = 0; k < K; ++k) exact += double(a[std::size_t(i * K + k)]) * double(w[std::size_t(r * K + k)]);
        const std::size_t col = std::size_t(r);
        const float y =
            backend::cpu::dequantize(c[std::size_t(i * ldc) + col], scale[si], zero[si], B.scale[col], B.sums[col]);
        CHECK(double(y) == exact);
        CHECK(row[col] == y);
      }
    }
  }
}

namespace {

/// The golden error metric: max|a - b| / max(1, max|b|).
double relative_error(const Matrix& a, const Matrix& b) {
  return double(test::max_abs_diff(a, b)) / std::max(1.0, double(b.cwiseAbs().maxCoeff()));
}

template <class Backend>
void check_bound(DType stored, double bound) {
  CAPTURE(Backend::name());
  CAPTURE(name(stored));
  const LayerConfig c{.d_model = 96, .d_ff = 200, .num_experts = 8, .seed = 5};
  const WeightStore store = WeightStore::random(c, true, stored, 9);
  const Matrix x = random_normal_matrix(50, c.d_model, 4);
  const Output ref = make_layer<presets::Mixtral, backend::Reference>(c, store.view()).forward(x);
  const Output low = make_layer<presets::Mixtral, Backend>(c, store.view()).forward(x);
  CHECK(low.routing.expert == ref.routing.expert);  // routing is fp32 in every mode
  CHECK(low.routing.weight == ref.routing.weight);
  const double e = relative_error(low.y, ref.y);
  MESSAGE(Backend::name(), " on ", name(stored), " weights: error ", e);
  CHECK(e <= bound);
  CHECK(e > 1e-5);  // it really computed in lower precision
}

}  // namespace

TEST_CASE("bf16 compute and int8: routing unchanged, error within the documented bound") {
  for (DType stored : {DType::F32, DType::BF16}) {
    check_bound<backend::Cpu<numerics::Bf16Compute>>(stored, 1e-2);
    check_bound<backend::Cpu<numerics::Int8>>(stored, 6e-2);
  }
}

TEST_CASE("lower-precision numerics pack when the layer is built and stay deterministic across threads") {
  const LayerConfig c{.d_model = 40, .d_ff = 72, .num_experts = 4, .seed = 1};
  const WeightStore store = WeightStore::random(c, false, DType::F32, 3);
  const Matrix x = random_normal_matrix(33, c.d_model, 2);
  using Int8Cpu = backend::Cpu<numerics::Int8>;
  const Int8Cpu one(1), three(3);
  const auto layer_one = make_layer<presets::Switch, Int8Cpu>(c, store.view(), one);
  CHECK(layer_one.prepared().bytes() > 0);
  CHECK(layer_one.prepared().from.holds_copy);
  const auto a = layer_one.forward(x);
  const auto b = make_layer<presets::Switch, Int8Cpu>(c, store.view(), three).forward(x);
  CHECK(a.y == b.y);
  // int8 weights: a quarter of the fp32 bytes, plus a scale and a sum per
  // output and padding to whole panels (a third at these tiny sizes).
  const std::size_t fp32_bytes = sizeof(float) * std::size_t(c.num_experts * 2 * c.d_ff * c.d_model);
  CHECK(layer_one.prepared().bytes() < fp32_bytes / 2);
}
