#pragma once
/// \file default.hpp
/// DefaultBackend: backend::Cpu<> unless the build says otherwise with
/// -DMOE_DEFAULT_BACKEND=moe::backend::Reference. CUDA is never a silent
/// default: it is always an explicit choice, so results never change because
/// of how a program was compiled.

#include "moe/backend/cpu.hpp"
#include "moe/backend/reference.hpp"

namespace moe {
#ifdef MOE_DEFAULT_BACKEND
using DefaultBackend = MOE_DEFAULT_BACKEND;
#else
using DefaultBackend = backend::Cpu<>;
#endif
static_assert(BackendPolicy<DefaultBackend>, "MOE_DEFAULT_BACKEND does not name a backend");
}  // namespace moe
