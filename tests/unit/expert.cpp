// Activations and expert FFNs against closed forms and plain Eigen.
#include "test_support.hpp"

#include <cmath>

using namespace moe;

TEST_CASE("activations match their formulas") {
  for (float z : {-6.0f, -1.5f, -0.1f, 0.0f, 0.3f, 2.0f, 8.0f}) {
    CHECK(SiLU{}(z) == doctest::Approx(z / (1 + std::exp(-z))));
    CHECK(GeLU{}(z) == doctest::Approx(0.5 * z * (1 + std::erf(z / std::sqrt(2.0)))));
    CHECK(ReLU{}(z) == (z > 0 ? z : 0.0f));
    CHECK(GeLUTanh{}(z) == doctest::Approx(GeLU{}(z)).epsilon(2e-3));
  }
  CHECK(GeLU{}(1.0f) == doctest::Approx(0.8413447460685429));  // Φ(1)
}

TEST_CASE_TEMPLATE("activation derivatives match central differences of the activation", A, SiLU, GeLU, GeLUTanh,
                   ReLU) {
  // In double, h = 1e-4: the difference quotient is exact to ~1e-8, far below
  // the 1e-5 tolerance, so a wrong derivative (a dropped term) cannot pass.
  const A a{};
  for (double z : {-6.0, -2.5, -1.0, -0.3, 0.2, 0.7, 1.5, 3.0, 7.0}) {
    CAPTURE(z);
    const double h = 1e-4, fd = (a(z + h) - a(z - h)) / (2 * h);
    CHECK(a.derivative(float(z)) == doctest::Approx(fd).epsilon(1e-5).scale(1.0));
  }
}

namespace {
template <class F>
void check_against_eigen(DType dtype) {
  const index_t d = 19, f = 23;
  const Matrix w_gate = random_normal_matrix(f, d, 1, 0.3f), w_up = random_normal_matrix(f, d, 2, 0.3f),
               w_down = random_normal_matrix(d, f, 3, 0.3f);
  // Store in `dtype`, then compare with Eigen on the rounded values.
  auto rounded = [&](const Matrix& m, std::vector<std::uint16_t>& bits) {
    Matrix r = m;
    bits.resize(std::size_t(m.size()));
    for (index_t i = 0; i < m.size(); ++i) {
      if (dtype == DType::BF16) {
        const Eigen::bfloat16 b(m.data()[i]);
        std::memcpy(&bits[std::size_t(i)], &b, 2);
        r.data()[i] = float(b);
      } else {
        const Eigen::half h(m.data()[i]);
        std::memcpy(&bits[std::size_t(i)], &h, 2);
        r.data()[i] = float(h);
      }
    }
    return r;
  };
  std::vector<std::uint16_t> bg, bu, bd;
  const Matrix g = dtype == DType::F32 ? w_gate : rounded(w_gate, bg);
  const Matrix u = dtype == DType::F32 ? w_up : rounded(w_up, bu);
  const Matrix dn = dtype == DType::F32 ? w_down : rounded(w_down, bd);
  auto view = [&](const Matrix& m, const std::vector<std::uint16_t>& bits) {
    return dtype == DType::F32 ? WeightMatrix{m.data(), DType::F32, m.rows(), m.cols()}
                               : WeightMatrix{bits.data(), dtype, m.rows(), m.cols()};
  };
  ExpertWeights w{F::gated ? view(w_gate, bg) : WeightMatrix{}, view(w_up, bu), view(w_down, bd)};
  Expert<F>::validate(w, d, f, 0);

  const Matrix x = random_normal_matrix(1, d, 4);
  Matrix y(1, d);
  Expert<F>::apply(w, x.data(), y.data());
  const typename F::activation act{};
  Eigen::RowVectorXf h = (x * u.transpose()).unaryExpr([&](float z) { return F::gated ? z : act(z); });
  if constexpr (F::gated) h = h.cwiseProduct((x * g.transpose()).unaryExpr([&](float z) { return act(z); }));
  const Eigen::RowVectorXf expected = h * dn.transpose();
  for (index_t i = 0; i < d; ++i) CHECK(y(0, i) == doctest::Approx(expected(i)).epsilon(1e-5));
}
}  // namespace

TEST_CASE_TEMPLATE("Expert<FFN>::apply equals the three-line Eigen version", F, SwiGLU, GeGLU, MLP<ReLU>, MLP<GeLU>) {
  check_against_eigen<F>(DType::F32);
  check_against_eigen<F>(DType::BF16);
  check_against_eigen<F>(DType::F16);
}

TEST_CASE("Expert::validate names the expert, the matrix and the shapes") {
  const Matrix a = random_normal_matrix(8, 4, 1), b = random_normal_matrix(4, 8, 2);
  ExpertWeights w{weight_view(a.data(), 8, 4), weight_view(a.data(), 8, 4), weight_view(b.data(), 4, 8)};
  Expert<SwiGLU>::validate(w, 4, 8, 0);
  test::require_error([&] { Expert<SwiGLU>::validate(w, 4, 9, 3); }, ErrorCode::shape_mismatch,
                      {"expert 3", "gate (w1)", "[8, 4]", "expected [9, 4]"});
  ExpertWeights missing = w;
  missing.gate = {};
  test::require_error([&] { Expert<SwiGLU>::validate(missing, 4, 8, 1); }, ErrorCode::invalid_argument,
                      {"expert 1", "missing"});
  Expert<MLP<ReLU>>::validate(missing, 4, 8, 1);  // a plain MLP has no gate
  std::vector<Eigen::bfloat16> bf(32);
  ExpertWeights mixed = w;
  mixed.down = weight_view(bf.data(), 4, 8);
  test::require_error([&] { Expert<SwiGLU>::validate(mixed, 4, 8, 2); }, ErrorCode::dtype_mismatch,
                      {"expert 2", "F32", "BF16"});
  ExpertWeights ints = w;
  ints.up.dtype = DType::I32;
  test::require_error([&] { Expert<SwiGLU>::validate(ints, 4, 8, 0); }, ErrorCode::dtype_mismatch, {"I32"});
}
