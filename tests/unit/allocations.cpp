// Steady state allocates nothing: once a Workspace has grown to a call's
// shapes, forward (prefill and decode, every backend and numerics) calls no
// operator new and, on glibc without a sanitizer, no malloc either (Eigen
// allocates its GEMM blocks with malloc). Counted by replacing the global
// allocation functions.
#include "test_support.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<long> allocations{0};

void* counted(std::size_t n, std::size_t align = alignof(std::max_align_t));
}  // namespace

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MOE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MOE_SANITIZED 1
#endif
#endif
// A sanitizer owns malloc; elsewhere glibc lets the program interpose it.
#if defined(__GLIBC__) && !defined(MOE_SANITIZED)
#define MOE_COUNT_MALLOC 1
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* malloc(std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t align, std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(align, n);
}
int posix_memalign(void** p, std::size_t align, std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  *p = __libc_memalign(align, n);
  return *p ? 0 : 12;  // ENOMEM
}
}
#endif

namespace {
void* counted(std::size_t n, std::size_t align) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
#ifdef MOE_COUNT_MALLOC
  allocations.fetch_sub(1, std::memory_order_relaxed);  // the malloc below counts it
#endif
  void* p =
      align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align) : std::malloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted(n); }
void* operator new[](std::size_t n) { return counted(n); }
void* operator new(std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace moe;

namespace {

/// Allocations made by `calls` forward calls after two warm-up calls.
template <class Layer>
long steady_state_allocations(const Layer& layer, const std::vector<Matrix>& inputs, ForwardOptions opt = {}) {
  auto ws = layer.make_workspace();
  for (const Matrix& x : inputs) layer.forward(x, ws, opt);  // grow to every shape
  for (const Matrix& x : inputs) layer.forward(x, ws, opt);
  const long before = allocations.load();
  for (int round = 0; round < 3; ++round)
    for (const Matrix& x : inputs) layer.forward(x, ws, opt);
  return allocations.load() - before;
}

template <class Preset, class Backend>
void check_backend(const WeightStore& store, const LayerConfig& c, Backend backend, bool pack) {
  CAPTURE(Backend::name());
  CAPTURE(pack);
  auto layer = make_layer<Preset, Backend>(c, store.view(), backend);
  if (pack) layer.pack_weights();
  const std::vector<Matrix> prefill = {random_normal_matrix(64, c.d_model, 1)};
  std::vector<Matrix> decode;  // one token at a time, a different token each call
  for (std::uint64_t i = 0; i < 8; ++i) decode.push_back(random_normal_matrix(1, c.d_model, 10 + i));
  CHECK(steady_state_allocations(layer, prefill) == 0);
  CHECK(steady_state_allocations(layer, decode) == 0);
}

}  // namespace

TEST_CASE("the counter counts") {
  long before = allocations.load();
  auto* v = new std::vector<int>(100);
  delete v;
  CHECK(allocations.load() - before == 2);
#ifdef MOE_COUNT_MALLOC
  before = allocations.load();
  void* volatile p = std::malloc(64);  // volatile: the call may not be elided
  std::free(p);
  CHECK(allocations.load() - before == 1);
#endif
}

TEST_CASE("steady-state forward allocates nothing: prefill and decode, every backend") {
  const LayerConfig c{.d_model = 48, .d_ff = 80, .num_experts = 8, .seed = 2};
  const WeightStore f32 = WeightStore::random(c, true, DType::F32, 3),
                    bf16 = WeightStore::random(c, true, DType::BF16, 4);
  for (const WeightStore* store : {&f32, &bf16}) {
    check_backend<presets::Mixtral>(*store, c, backend::Reference{}, false);
    check_backend<presets::Mixtral>(*store, c, backend::Cpu<>(2), false);
    check_backend<presets::Mixtral>(*store, c, backend::Cpu<>(2), true);
    check_backend<presets::Mixtral>(*store, c, backend::Cpu<>(1), true);
    check_backend<presets::Mixtral>(*store, c, backend::Cpu<numerics::Bf16Compute>(2), true);
    check_backend<presets::Mixtral>(*store, c, backend::Cpu<numerics::Int8>(2), true);
    check_backend<presets::Mixtral>(*store, c, backend::EigenGemm(2), false);
  }
}

TEST_CASE("steady-state forward allocates nothing in training mode with jitter and capacity (Switch)") {
  const LayerConfig c{.d_model = 32, .d_ff = 40, .num_experts = 4, .seed = 2};
  const WeightStore store = WeightStore::random(c, false, DType::F32, 3);
  const auto layer = make_layer<presets::Switch>(c, store.view(), backend::Cpu<>(2));
  const std::vector<Matrix> inputs = {random_normal_matrix(40, c.d_model, 1)};
  CHECK(steady_state_allocations(layer, inputs, {Mode::train, 3}) == 0);
}
