// Every ISA this build and this CPU support, side by side: the same routing,
// outputs equal to the Reference within the numerics' bound, and equal to
// each other (forced AVX2 against AVX-512) within the same bound.
#include "block_weights.hpp"
#include "test_support.hpp"

#include <moe/backend/cpu/block_rows.hpp>

#include <cstdlib>

using namespace moe;

namespace {

/// Calls f(I{}) for every ISA this unit carries (isa::Carried).
template <class F, class... I>
void for_each(F&& f, isa::List<I...>) {
  (f(I{}), ...);
}
template <class F>
void for_each_isa(F&& f) {
  for_each(f, isa::Carried{});
}

/// max|a − b| / max(1, max|b|): the bound numerics.hpp states per numerics.
double relative(const Matrix& a, const Matrix& b) {
  return double(test::max_abs_diff(a, b)) / std::max(1.0, double(b.cwiseAbs().maxCoeff()));
}

template <class N, FFN F = SwiGLU>
void compare_isas(DType dtype, double bound, bool pack,
                  LayerConfig c = {.d_model = 72, .d_ff = 136, .num_experts = 6, .seed = 9}) {
  CAPTURE(N::name);
  CAPTURE(name(dtype));
  CAPTURE(pack);
  CAPTURE(c.d_model);
  CAPTURE(c.d_ff);
  CAPTURE(F::activation::name);
  using Layer = MoELayer<Router<TopK<2>>, Expert<F>, Dropless, NoLoss, backend::Reference>;
  const WeightStore store = WeightStore::random(c, F::gated, dtype, 4);
  const Layer ref(c, store.view());
  for (index_t T : {1, 2, 7, 50}) {
    CAPTURE(T);
    const Matrix x = random_normal_matrix(T, c.d_model, std::uint64_t(T));
    const Output expected = ref.forward(x);
    std::vector<Matrix> ys;
    for_each_isa([&](auto i) {
      using I = decltype(i);
      CAPTURE(I::name);
      if (int(isa::cpu_level()) < I::level) return;  // compiled for it, but this CPU lacks it
      MoELayer<Router<TopK<2>>, Expert<F>, Dropless, NoLoss, backend::Cpu<N, I>> layer(c, store.view(), {}, {}, {},
                                                                                       backend::Cpu<N, I>(2));
      if (pack) layer.pack_weights();
      const Output out = layer.forward(x);
      CHECK(out.routing.expert == expected.routing.expert);  // routing is fp32 and backend-independent
      CHECK(out.plan.slot_row == expected.plan.slot_row);
      CHECK(relative(out.y, expected.y) <= bound);
      for (const Matrix& other : ys) CHECK(relative(out.y, other) <= bound);
      ys.push_back(out.y);
    });
    CHECK(ys.size() >= 1);
  }
}

}  // namespace

TEST_CASE("the CPU's level, this build's native ISA, and picking one at run time") {
  MESSAGE("cpu: ", isa::name(isa::cpu_level()), ", native: ", isa::Native::name);
  CHECK(int(isa::cpu_level()) >= isa::Native::level);  // a binary built for this CPU runs on it
  CHECK(isa::best_level() == isa::compiled_level);
  CHECK(isa::parse("native") == isa::best_level());
  CHECK(isa::parse("avx2") == isa::Level::avx2);
  test::require_error([] { (void)isa::parse("sse9"); }, ErrorCode::invalid_argument, {"--isa", "sse9"});
  for (isa::Level l : isa::available_levels())
    CHECK(isa::with_isa(l, []<class I>() { return I::name; }) == isa::name(l));
  if (isa::compiled_level != isa::Level::avx512_bf16)
    test::require_error([] { (void)isa::with_isa(isa::Level::avx512_bf16, []<class I>() { return 0; }); },
                        ErrorCode::unsupported, {"avx512-bf16", "not"});
}

TEST_CASE("every ISA gives the Reference's routing and output within the numerics' bound") {
  for (DType dt : {DType::F32, DType::BF16}) {
    compare_isas<numerics::AsStored>(dt, 1e-5, false);
    compare_isas<numerics::AsStored>(dt, 1e-5, true);
    compare_isas<numerics::Bf16Compute>(dt, 1e-2, true);
    compare_isas<numerics::Int8>(dt, 6e-2, true);
  }
}

TEST_CASE("bf16 compute on every ISA, on vdpbf16ps and on fp32 FMAs: odd depths, two depth blocks, ungated") {
  // d_model 67 and d_ff 301 are odd (the k-pair layout of vdpbf16ps pads
  // them), and 301 > 256 splits the down projection into two depth blocks.
  const LayerConfig odd{.d_model = 67, .d_ff = 301, .num_experts = 5, .seed = 3};
  for (const char* dot : {"1", "0"}) {  // force each kernel, whatever this CPU prefers
    CAPTURE(dot);
    ::setenv("MOE_BF16_DOT", dot, 1);
    CHECK(isa::bf16_dot_preferred() == (dot[0] == '1'));
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      compare_isas<numerics::Bf16Compute>(dt, 1e-2, true, odd);
      compare_isas<numerics::Bf16Compute, MLP<GeLU>>(dt, 1e-2, true, odd);
    }
    compare_isas<numerics::Bf16Compute>(DType::BF16, 1e-2, true);
  }
  ::unsetenv("MOE_BF16_DOT");
}

TEST_CASE("bf16 compute packs k pairs exactly where vdpbf16ps is there and preferred") {
  const LayerConfig c{.d_model = 32, .d_ff = 48, .num_experts = 2, .seed = 1};
  const WeightStore store = WeightStore::random(c, true, DType::BF16, 1);
  for (const char* dot : {"1", "0"}) {
    CAPTURE(dot);
    ::setenv("MOE_BF16_DOT", dot, 1);
    auto layer = make_layer<presets::Mixtral>(c, store.view(), backend::Cpu<numerics::Bf16Compute>(1));
    layer.pack_weights();
    const auto& packed = *layer.prepared().packed;
    CHECK(packed[0].up.pairs == (isa::Native::bf16 && dot[0] == '1'));
    CHECK(packed[0].down.pairs == packed[0].up.pairs);
  }
  ::unsetenv("MOE_BF16_DOT");
}

TEST_CASE("int8 sums are exact on every ISA: the same bits") {
  const LayerConfig c{.d_model = 40, .d_ff = 72, .num_experts = 4, .seed = 1};
  const WeightStore store = WeightStore::random(c, true, DType::F32, 3);
  const Matrix x = random_normal_matrix(33, c.d_model, 2);
  std::vector<Matrix> ys;
  for_each_isa([&](auto i) {
    using I = decltype(i);
    if (int(isa::cpu_level()) < I::level) return;
    ys.push_back(make_layer<presets::Mixtral>(c, store.view(), backend::Cpu<numerics::Int8, I>(2)).forward(x).y);
  });
  for (const Matrix& y : ys) CHECK(y == ys.front());
}

TEST_CASE("block-quantised weights on every ISA: the Reference's output on their dequantised values") {
  for (const DType d : test::block_types) {
    CAPTURE(name(d));
    const test::BlockLayer w(d, 256, 256);
    using Ref = MoELayer<Router<TopK<2>>, Expert<SwiGLU>, Dropless, NoLoss, backend::Reference>;
    const Ref ref(w.config, w.widened);
    for (index_t T : {1, 2, 7, 50}) {
      CAPTURE(T);
      const Matrix x = random_normal_matrix(T, 256, std::uint64_t(T));
      const Matrix expected = ref.forward(x).y;
      for_each_isa([&](auto i) {
        using I = decltype(i);
        CAPTURE(I::name);
        if (int(isa::cpu_level()) < I::level) return;
        using Cpu = backend::Cpu<numerics::AsStored, I>;
        const MoELayer<Router<TopK<2>>, Expert<SwiGLU>, Dropless, NoLoss, Cpu> layer(w.config, w.quantised, {}, {}, {},
                                                                                     Cpu(2));
        CHECK(relative(layer.forward(x).y, expected) <= 1e-5);
      });
    }
    // The streaming kernel on its own, every tail of its tiles (5 rows of A, 7 of W).
    const std::vector<unsigned char> blocks = test::random_blocks(d, 7, 512, 3);
    const std::vector<float> values = test::dequantised(d, blocks, 7 * 512);
    const Matrix a = random_normal_matrix(5, 512, 8);
    Matrix want(5, 7);
    for (index_t m = 0; m < 5; ++m)
      for (index_t n = 0; n < 7; ++n) {
        double s = 0;
        for (index_t k = 0; k < 512; ++k) s += double(a(m, k)) * values[std::size_t(n * 512 + k)];
        want(m, n) = float(s);
      }
    for_each_isa([&](auto i) {
      using I = decltype(i);
      if constexpr (backend::cpu::has_block_kernels<I>) {
        CAPTURE(I::name);
        if (int(isa::cpu_level()) < I::level) return;
        Matrix got(5, 7);
        backend::cpu::block_gemm_nt<I>(a.data(), 512, 5, {blocks.data(), d, 7, 512}, 0, 7, got.data(), 7);
        CHECK(relative(got, want) <= 1e-5);
        std::vector<float> rows(7 * 512);
        backend::cpu::dequantize_rows<I>({blocks.data(), d, 7, 512}, 0, 7, rows.data());
        CHECK(rows == values);  // the reference dequantisation's values, bit for bit
      }
    });
  }
}
