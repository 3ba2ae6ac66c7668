#pragma once
/// \file function_ref.hpp
/// FunctionRef<R(Args...)>: a non-owning reference to a callable. What a
/// fork-join loop hands its workers: unlike std::function it never copies
/// the callable or allocates, so a kernel's parallel_for costs no heap
/// allocation however much its lambda captures. The callable must outlive
/// the call it is passed to.

#include <memory>
#include <type_traits>
#include <utility>

namespace moe {

template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> && std::is_invocable_r_v<R, F&, Args...>)
      FunctionRef(F&& f)
  noexcept  // NOLINT: implicit, as std::function is
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))), call_([](void* o, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace moe
