#pragma once
/// \file error.hpp
/// moe::Error: every piece of bad input surfaces as one of these, never as a
/// crash. The message says what was expected and what came.

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace moe {

/// What kind of thing went wrong (taxonomy after cutlass::Status).
enum class ErrorCode {
  invalid_argument,  ///< a parameter outside its domain (k > E, capacity factor <= 0)
  shape_mismatch,    ///< a tensor with the wrong shape
  dtype_mismatch,    ///< a tensor with the wrong or an unsupported element type
  non_finite,        ///< NaN or Inf where a finite value is required (router logits)
  bad_file,          ///< a file that is missing, truncated or malformed
  unsupported,       ///< a valid request this build cannot serve
  device,            ///< an accelerator call failed (CUDA runtime, cuBLAS): the message names the call
};

inline constexpr std::string_view to_string(ErrorCode c) noexcept {
  switch (c) {
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::shape_mismatch:
      return "shape_mismatch";
    case ErrorCode::dtype_mismatch:
      return "dtype_mismatch";
    case ErrorCode::non_finite:
      return "non_finite";
    case ErrorCode::bad_file:
      return "bad_file";
    case ErrorCode::unsupported:
      return "unsupported";
    case ErrorCode::device:
      return "device";
  }
  return "unknown";
}

/// The one exception type of the library.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

namespace detail {

/// Concatenates anything streamable: cat("x has ", n, " columns").
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream s;
  (s << ... << std::forward<Args>(args));
  return s.str();
}

/// Throws moe::Error(code, cat(parts...)) when `ok` is false. The message is
/// only built on failure, so checks on hot paths cost a branch.
template <class... Parts>
inline void require(bool ok, ErrorCode code, Parts&&... parts) {
  if (!ok) [[unlikely]]
    throw Error(code, cat(std::forward<Parts>(parts)...));
}

/// Runs a policy's parameter check, `p.validate()`, when it has one: every
/// policy may have one (the layer calls it at construction), none must.
template <class P>
void validate_policy(const P& p) {
  if constexpr (requires { p.validate(); }) p.validate();
}

}  // namespace detail
}  // namespace moe
