#pragma once
// Golden conformance: run a case file through moe and compare with the
// values an independent implementation stored in it (tests/data/golden,
// documented in its README). Used by the moe-golden tool and the tests.

#include <moe/io/safetensors.hpp>
#include <moe/io/safetensors_writer.hpp>
#include <moe/moe.hpp>
#ifdef MOE_GOLDEN_CUDA
#include <moe/backend/cuda.cuh>
#endif

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

namespace moe::golden {

enum class BackendChoice { reference, cpu, cpu_packed, cpu_bf16, cpu_int8, eigen_gemm, cuda, cuda_bf16 };
inline std::string_view name(BackendChoice b) {
  switch (b) {
    case BackendChoice::reference:
      return "reference";
    case BackendChoice::cpu:
      return "cpu";
    case BackendChoice::cpu_packed:
      return "cpu-packed";
    case BackendChoice::cpu_bf16:
      return "cpu-bf16";
    case BackendChoice::cpu_int8:
      return "cpu-int8";
    case BackendChoice::eigen_gemm:
      return "eigen-gemm";
    case BackendChoice::cuda:
      return "cuda";
    case BackendChoice::cuda_bf16:
      return "cuda-bf16";
  }
  return "?";
}

/// Whether the backend runs on a GPU (backend::Cuda).
inline bool on_device(BackendChoice b) { return b == BackendChoice::cuda || b == BackendChoice::cuda_bf16; }

/// Whether the backend computes gradients (fp32 numerics only, host backends).
inline bool can_train(BackendChoice b) {
  return b != BackendChoice::cpu_bf16 && b != BackendChoice::cpu_int8 && !on_device(b);
}

/// The error bound of a backend's numerics (numerics.hpp) on the golden
/// metric max|a - g| / max(1, max|g|); exact backends keep the kind's own.
inline double tolerance_for(BackendChoice b, double exact) {
  if (b == BackendChoice::cpu_bf16 || b == BackendChoice::cuda_bf16) return 1e-2;
  if (b == BackendChoice::cpu_int8) return 6e-2;
  return exact;
}

/// An output tensor moe computed, in the dtype and shape of the golden one.
struct Tensor {
  DType dtype = DType::F32;
  std::vector<index_t> shape;
  std::vector<float> f32;          // when dtype == F32
  std::vector<std::int64_t> ints;  // when dtype is I32 or U8
};
using Outputs = std::map<std::string, Tensor>;

inline Tensor floats(std::vector<index_t> shape, std::vector<float> v) {
  return {DType::F32, std::move(shape), std::move(v), {}};
}
template <class I>
Tensor ints(DType d, std::vector<index_t> shape, const std::vector<I>& v) {
  return {d, std::move(shape), {}, std::vector<std::int64_t>(v.begin(), v.end())};
}
inline Tensor matrix(const Matrix& m) {
  return floats({m.rows(), m.cols()}, std::vector<float>(m.data(), m.data() + m.size()));
}

/// The ISAs the golden cases run the CPU backends on: isa::Offered, AVX2
/// (forced) and the build's native one. tests/unit/isa.cpp compares every
/// carried ISA on random layers; here each golden case runs on both ends.
using GoldenIsas = isa::Offered;

/// The levels of GoldenIsas this CPU runs, lowest first.
inline std::vector<isa::Level> golden_levels() { return isa::runnable(GoldenIsas{}); }

/// The ISA the CPU backends run on (moe-golden --isa; the tests set each in turn).
inline isa::Level& current_isa() {
  static isa::Level level = isa::Level(isa::Native::level);
  return level;
}

/// backend::Cpu on the panel kernel: every layer it serves packs its experts.
template <class I>
struct PackedCpuOn : backend::Cpu<numerics::AsStored, I> {
  static constexpr std::string_view name() { return "cpu-packed"; }
  typename backend::Cpu<numerics::AsStored, I>::Prepared prepare(std::span<const ExpertWeights> w,
                                                                 PrepareOptions = {}) const {
    return backend::Cpu<numerics::AsStored, I>::prepare(w, {.pack = true});
  }
};

/// Runs fn(backend_object) with the chosen host backend type, the CPU ones on current_isa().
template <class Fn>
decltype(auto) with_host_backend(BackendChoice b, Fn&& fn) {
  detail::require(!on_device(b), ErrorCode::unsupported, "backend ", name(b),
                  ": this case runs on the host backends only (the decoder is not on the device yet)");
  if (b == BackendChoice::reference) return fn(backend::Reference{});
  if (b == BackendChoice::eigen_gemm) return fn(backend::EigenGemm{});
  return isa::with_isa(
      current_isa(),
      [&]<class I>() -> decltype(auto) {
        if (b == BackendChoice::cpu_packed) return fn(PackedCpuOn<I>{});
        if (b == BackendChoice::cpu_bf16) return fn(backend::Cpu<numerics::Bf16Compute, I>{});
        if (b == BackendChoice::cpu_int8) return fn(backend::Cpu<numerics::Int8, I>{});
        return fn(backend::Cpu<numerics::AsStored, I>{});
      },
      GoldenIsas{});
}

/// with_host_backend, and backend::Cuda where this program was built with it
/// (MOE_GOLDEN_CUDA: moe-golden in a MOE_ENABLE_CUDA build).
template <class Fn>
decltype(auto) with_backend(BackendChoice b, Fn&& fn) {
#ifdef MOE_GOLDEN_CUDA
  if (b == BackendChoice::cuda) return fn(backend::Cuda<>{});
  if (b == BackendChoice::cuda_bf16) return fn(backend::Cuda<numerics::Bf16Compute>{});
#else
  detail::require(!on_device(b), ErrorCode::unsupported, "backend ", name(b),
                  ": this moe-golden was built without CUDA (configure with -DMOE_ENABLE_CUDA=ON)");
#endif
  return with_host_backend(b, std::forward<Fn>(fn));
}

/// layer.forward on host x, its output on the host: a device backend gets a
/// device copy of x, and its y comes back.
template <class Layer>
Output forward_on_host(const Layer& layer, MatrixView<const float> x, typename Layer::workspace_type& ws,
                       ForwardOptions opt = {}) {
  if constexpr (std::same_as<typename Layer::space, memory::Host>) {
    return layer.forward(x, ws, opt);
  } else {
#ifdef MOE_GOLDEN_CUDA
    const auto& out = layer.forward(cuda::DeviceMatrix::from_host(x), ws, opt);
    return {out.y.to_host(), out.routing, out.plan, out.stats, out.options};
#endif
  }
}

/// Calls fn.template operator()<K>() for a runtime k in 1..8.
template <class Fn>
decltype(auto) with_k(int k, Fn&& fn) {
  switch (k) {
    case 1:
      return fn.template operator()<1>();
    case 2:
      return fn.template operator()<2>();
    case 3:
      return fn.template operator()<3>();
    case 4:
      return fn.template operator()<4>();
    case 5:
      return fn.template operator()<5>();
    case 6:
      return fn.template operator()<6>();
    case 7:
      return fn.template operator()<7>();
    case 8:
      return fn.template operator()<8>();
  }
  throw Error(ErrorCode::unsupported, detail::cat("moe-golden: top_k = ", k, " (supported: 1 to 8)"));
}

inline MatrixView<const float> input(const io::SafeTensors& f, const std::string& name) {
  const io::TensorView& t = f.tensor(name);
  detail::require(t.shape.size() == 2, ErrorCode::shape_mismatch, f.path().string(), ": '", name,
                  "' should be 2-D, is ", io::shape_string(t.shape));
  return {t.as<float>().data(), t.dim(0), t.dim(1)};
}

/// Expert e's weights from stacked [E, ...] tensors.
inline ExpertWeights stacked_expert(const io::SafeTensors& f, index_t e, bool gated) {
  if (gated) return {f.tensor("w1").matrix(e), f.tensor("w3").matrix(e), f.tensor("w2").matrix(e)};
  return {{}, f.tensor("wi").matrix(e), f.tensor("wo").matrix(e)};
}

inline LayerWeights stacked_weights(const io::SafeTensors& f, bool gated) {
  LayerWeights w;
  w.router.gate = f.tensor("gate_w").matrix();
  const index_t E = w.router.gate.rows;
  for (index_t e = 0; e < E; ++e) w.experts.push_back(stacked_expert(f, e, gated));
  return w;
}

inline LayerConfig config_of(const LayerWeights& w, index_t d_model) {
  return {.d_model = d_model, .d_ff = w.experts.at(0).up.rows, .num_experts = w.router.gate.rows};
}

/// Stacked [E, rows, cols] gradients from one matrix per expert.
inline Tensor stacked(const std::vector<ExpertGrads>& g, Matrix ExpertGrads::*part) {
  const Matrix& first = g.at(0).*part;
  Tensor t = floats({index_t(g.size()), first.rows(), first.cols()}, {});
  for (const ExpertGrads& e : g) t.f32.insert(t.f32.end(), (e.*part).data(), (e.*part).data() + (e.*part).size());
  return t;
}

/// The moe_block gradients (README §2, has_grads): the layer's backward
/// with the loss coefficients at 0 (the golden L is Σ y ⊙ dy alone), and
/// each loss's own gradient on the logits at coefficient 1.
template <class Layer>
void moe_block_grads(const io::SafeTensors& f, const Layer& layer, MatrixView<const float> x,
                     typename Layer::workspace_type& ws, Outputs& o) {
  const LayerGrads g = layer.backward(x, ws, input(f, "dy"));
  o["grad_x"] = matrix(g.x);
  o["grad_gate_w"] = matrix(g.router_gate);
  o["grad_w1"] = stacked(g.experts, &ExpertGrads::gate);
  o["grad_w3"] = stacked(g.experts, &ExpertGrads::up);
  o["grad_w2"] = stacked(g.experts, &ExpertGrads::down);

  const Routing& r = ws.out.routing;
  const index_t T = r.tokens, E = r.experts;
  RoutingGrad aux, z;
  aux.reset(T, E, r.k);
  z.reset(T, E, r.k);
  SwitchBalanceLoss{.alpha = 1.0f, .counting = SlotCounting::every_slot}.backward(r, ws.out.plan, aux);
  for (index_t t = 0; t < T; ++t)  // d/dprobs → d/dlogits through the softmax
    SoftmaxThenTopK{}.probabilities_backward(nullptr, r.probs.data() + t * E, aux.probs.data() + t * E, E,
                                             aux.logits.data() + t * E);
  RouterZLoss{.beta = 1.0f}.backward(r, ws.out.plan, z);
  o["grad_logits_aux"] = floats({T, E}, aux.logits);
  o["grad_logits_z"] = floats({T, E}, z.logits);
}

/// moe_block: the Mixtral sparse block, dropless top-k (README §2).
inline Outputs run_moe_block(const io::SafeTensors& f, BackendChoice b) {
  const MatrixView<const float> x = input(f, "x");
  const LayerWeights w = stacked_weights(f, true);
  const LayerConfig c = config_of(w, x.cols);
  const int k = std::stoi(f.meta("top_k", "0"));
  return with_backend(b, [&](auto backend) {
    return with_k(k, [&]<int K>() {
      using Loss = Losses<SwitchBalanceLoss, RouterZLoss>;
      const MoELayer<Router<TopK<K>>, Expert<SwiGLU>, Dropless, Loss, decltype(backend)> layer(
          c, w, {}, {},
          Loss(SwitchBalanceLoss{.alpha = 0.0f, .counting = SlotCounting::every_slot}, RouterZLoss{.beta = 0.0f}),
          backend);
      auto ws = layer.make_workspace();
      const Output out = forward_on_host(layer, x, ws);
      const index_t T = x.rows, E = c.num_experts;
      Outputs o;
      if constexpr (TrainableBackend<decltype(backend)>)
        if (f.meta("has_grads", "false") == "true") moe_block_grads(f, layer, x, ws, o);
      o["y"] = matrix(out.y);
      o["router_logits"] = floats({T, E}, out.routing.logits);
      o["router_probs"] = floats({T, E}, out.routing.probs);
      o["topk_idx"] = ints(DType::I32, {T, K}, out.routing.expert);
      o["topk_weight"] = floats({T, K}, out.routing.weight);
      o["tokens_per_expert"] = ints(DType::I32, {E}, out.stats.computed_per_expert);
      o["aux_loss"] = floats({1}, {*out.stats.loss("balance")});
      o["z_loss"] = floats({1}, {*out.stats.loss("z")});
      return o;
    });
  });
}

/// switch: top-1 with capacity, both priorities (README §3).
inline Outputs run_switch(const io::SafeTensors& f, BackendChoice b) {
  const MatrixView<const float> x = input(f, "x");
  const bool gated = f.meta("expert") == "swiglu";
  detail::require(gated || f.meta("expert") == "relu_mlp", ErrorCode::unsupported, f.path().string(),
                  ": unknown expert '", f.meta("expert"), "'");
  const LayerWeights w = stacked_weights(f, gated);
  const LayerConfig c = config_of(w, x.cols);
  const double factor = f.tensor("capacity_factor").to_vector<float>().at(0);
  const index_t min_capacity = f.tensor("min_capacity").to_vector<std::int32_t>().at(0);
  const bool jitter = f.contains("jitter");
  // Stored jitter acts in training mode only, like drawn jitter.
  const ForwardOptions opt{jitter ? Mode::train : Mode::eval, 0};

  const auto run = [&](auto backend, auto noise, auto ffn, Priority priority) {
    using R = Router<TopK<1>, decltype(noise), SoftmaxTopKRaw>;
    using Loss = Losses<SwitchBalanceLoss, RouterZLoss>;
    const MoELayer<R, Expert<decltype(ffn)>, CapacityFactor, Loss, decltype(backend)> layer(
        c, w, R(noise), CapacityFactor{.train = factor, .eval = factor, .min = min_capacity, .order = priority},
        Loss(SwitchBalanceLoss{.counting = SlotCounting::top1}, RouterZLoss{}), backend);
    auto ws = layer.make_workspace();
    return forward_on_host(layer, x, ws, opt);
  };
  const auto both = [&](auto noise, auto ffn) {
    return with_backend(b, [&](auto backend) {
      return std::pair{run(backend, noise, ffn, Priority::token_order),
                       run(backend, noise, ffn, Priority::router_score)};
    });
  };
  const auto pick = [&](auto ffn) {
    if (jitter) return both(StoredJitter{input(f, "jitter")}, ffn);
    return both(NoNoise{}, ffn);
  };
  const auto [by_token, by_score] = gated ? pick(SwiGLU{}) : pick(MLP<ReLU>{});

  const index_t T = x.rows, E = c.num_experts, C = *by_token.plan.capacity;
  const auto kept_and_slot = [&](const Output& o, std::string_view suffix, Outputs& out) {
    std::vector<std::int32_t> kept(static_cast<std::size_t>(T)), slot(static_cast<std::size_t>(T));
    for (index_t t = 0; t < T; ++t) {
      slot[std::size_t(t)] = o.plan.slot_position[std::size_t(t)];
      kept[std::size_t(t)] = slot[std::size_t(t)] >= 0;
    }
    out[detail::cat("kept", suffix)] = ints(DType::U8, {T}, kept);
    out[detail::cat("slot", suffix)] = ints(DType::I32, {T}, slot);
    out[detail::cat("dropped", suffix)] = ints(DType::I32, {1}, std::vector<index_t>{o.stats.dropped_slots});
    out[detail::cat("y", suffix)] = matrix(o.y);
  };
  Outputs o;
  kept_and_slot(by_token, "", o);
  kept_and_slot(by_score, "_by_score", o);
  o["capacity"] = ints(DType::I32, {1}, std::vector<index_t>{C});
  o["router_logits"] = floats({T, E}, by_token.routing.logits);
  o["router_probs"] = floats({T, E}, by_token.routing.probs);
  o["expert_index"] = ints(DType::I32, {T}, by_token.routing.expert);
  o["top1_prob"] = floats({T}, by_token.routing.weight);
  o["tokens_per_expert"] = ints(DType::I32, {E}, by_token.stats.computed_per_expert);
  o["routed_per_expert"] = ints(DType::I32, {E}, by_token.stats.routed_per_expert);
  std::vector<std::int32_t> dispatch(std::size_t(T * E * C), 0);
  std::vector<float> combine(std::size_t(T * E * C), 0.0f);
  for (index_t t = 0; t < T; ++t) {
    const std::int32_t s = by_token.plan.slot_position[std::size_t(t)];
    if (s < 0) continue;
    const std::size_t i = std::size_t((t * E + by_token.routing.expert_at(t, 0)) * C + s);
    dispatch[i] = 1;
    combine[i] = by_token.routing.weight_at(t, 0);
  }
  o["dispatch"] = ints(DType::U8, {T, E, C}, dispatch);
  o["combine"] = floats({T, E, C}, combine);
  o["aux_loss"] = floats({1}, {*by_token.stats.loss("balance")});
  o["aux_loss_hf"] =
      floats({1}, {SwitchBalanceLoss{.counting = SlotCounting::top1_hf_quirk}.value(by_token.routing, by_token.plan)});
  o["z_loss"] = floats({1}, {*by_token.stats.loss("z")});
  return o;
}

}  // namespace moe::golden

#include "decoder_cases.hpp"

namespace moe::golden {

/// What a kind reads, and what it produces that a later issue will cover.
struct KindSpec {
  std::function<Outputs(const io::SafeTensors&, BackendChoice)> run;
  std::set<std::string> inputs;
  std::set<std::string> training;  ///< outputs only a backend that trains computes (else listed as unchecked)
  double tolerance;                ///< on max|a - g| / max(1, max|g|)
};

inline const std::map<std::string, KindSpec>& kinds() {
  static const std::map<std::string, KindSpec> k = {
      {"moe_block",
       {run_moe_block,
        {"x", "gate_w", "w1", "w2", "w3", "dy"},
        {"grad_x", "grad_gate_w", "grad_w1", "grad_w2", "grad_w3", "grad_logits_aux", "grad_logits_z"},
        1e-5}},
      {"switch",
       {run_switch,
        {"x", "gate_w", "w1", "w2", "w3", "wi", "wo", "jitter", "capacity_factor", "min_capacity"},
        {},
        1e-5}},
      {"rmsnorm", {run_rmsnorm, {"x", "weight"}, {}, 1e-5}},
      {"attention", {run_attention, {"x", "wq", "wk", "wv", "wo", "positions"}, {}, 1e-5}},
      {"model", {run_model, {"input_ids"}, {}, 1e-4}},
  };
  return k;
}

/// Writes outputs as a safetensors file (names and dtypes of the golden ones).
inline void write(const Outputs& outs, const std::filesystem::path& path,
                  const std::map<std::string, std::string>& meta) {
  io::SafeTensorsWriter w;
  for (const auto& [k, v] : meta) w.set_metadata(k, v);
  for (const auto& [name, t] : outs) {
    if (t.dtype == DType::F32) {
      w.add(name, t.shape, t.f32);
    } else if (t.dtype == DType::I32) {
      w.add(name, t.shape, std::vector<std::int32_t>(t.ints.begin(), t.ints.end()));
    } else {
      w.add(name, t.shape, std::vector<std::uint8_t>(t.ints.begin(), t.ints.end()));
    }
  }
  w.write(path);
}

/// One case's verdict.
struct CaseResult {
  std::string path;
  std::string kind;
  bool passed = true;
  bool skipped = false;
  double max_error = 0;  ///< worst relative float error over the outputs
  std::string worst;     ///< the tensor it came from
  std::vector<std::string> failures;
  std::vector<std::string> unchecked;  ///< stored outputs this backend does not compute (gradients on int8/bf16)
};

inline double compare_floats(const io::TensorView& g, const Tensor& t) {
  const std::vector<float> gv = g.to_vector<float>();
  double scale = 1.0, err = 0.0;
  for (float v : gv) scale = std::max(scale, double(std::abs(v)));
  for (std::size_t i = 0; i < gv.size(); ++i) {
    const double d = std::abs(double(gv[i]) - double(t.f32[i]));
    err = std::isnan(d) ? INFINITY : std::max(err, d);
  }
  return err / scale;
}

inline std::vector<std::int64_t> golden_ints(const io::TensorView& g) {
  if (g.dtype == DType::I32) {
    const auto v = g.to_vector<std::int32_t>();
    return {v.begin(), v.end()};
  }
  const auto v = g.to_vector<std::uint8_t>();
  return {v.begin(), v.end()};
}

/// Runs the case at `path` and compares every output with the stored one.
inline CaseResult check_file(const std::filesystem::path& path, BackendChoice b) {
  CaseResult r;
  r.path = path.string();
  const io::SafeTensors f(path);
  r.kind = f.meta("kind", "?");
  const auto it = kinds().find(r.kind);
  if (it == kinds().end()) {
    r.skipped = true;
    return r;
  }
  // The device backend runs the layer kinds; the decoder's are host-only so far.
  if (on_device(b) && r.kind != "moe_block" && r.kind != "switch") {
    r.skipped = true;
    return r;
  }
  const KindSpec& spec = it->second;
  const Outputs outs = spec.run(f, b);
  for (const io::TensorView& g : f.tensors()) {
    if (spec.inputs.count(g.name)) continue;
    if (spec.training.count(g.name) && !can_train(b)) {
      r.unchecked.push_back(g.name);
      continue;
    }
    const auto o = outs.find(g.name);
    if (o == outs.end()) {
      r.failures.push_back(detail::cat(g.name, ": not computed"));
      continue;
    }
    const Tensor& t = o->second;
    if (t.dtype != g.dtype || t.shape != g.shape) {
      r.failures.push_back(detail::cat(g.name, ": computed ", moe::name(t.dtype), " ", io::shape_string(t.shape),
                                       ", golden ", moe::name(g.dtype), " ", io::shape_string(g.shape)));
      continue;
    }
    if (t.dtype == DType::F32) {
      const double e = compare_floats(g, t);
      if (e >= r.max_error) {
        r.max_error = e;
        r.worst = g.name;
      }
      const double tolerance = tolerance_for(b, spec.tolerance);
      if (!(e <= tolerance)) r.failures.push_back(detail::cat(g.name, ": error ", e, " > ", tolerance));
    } else {
      const auto gv = golden_ints(g);
      index_t wrong = 0;
      for (std::size_t i = 0; i < gv.size(); ++i) wrong += gv[i] != t.ints[i];
      if (wrong) r.failures.push_back(detail::cat(g.name, ": ", wrong, " of ", gv.size(), " integers differ"));
    }
  }
  r.passed = r.failures.empty();
  return r;
}

}  // namespace moe::golden

namespace moe::golden {

/// io cases: io/dtypes decodes to its stored float twins; io/bad_* must be
/// rejected with moe::Error(bad_file).
inline CaseResult check_io_file(const std::filesystem::path& path) {
  CaseResult r;
  r.path = path.string();
  const bool must_fail = path.filename().string().rfind("bad_", 0) == 0;
  r.kind = must_fail ? "io_bad" : "io";
  if (must_fail) {
    try {
      const io::SafeTensors f(path);
      r.failures.push_back("accepted a malformed file");
    } catch (const Error& e) {
      if (e.code() != ErrorCode::bad_file) r.failures.push_back(detail::cat("wrong error code: ", e.what()));
      r.worst = e.what();  // the message, for the report
    }
    r.passed = r.failures.empty();
    return r;
  }
  const io::SafeTensors f(path);
  const auto same_bits = [&](const std::string& narrow, const std::string& wide, auto tag) {
    using H = decltype(tag);
    const auto h = f.tensor(narrow).to_vector<H>();
    const auto w = f.tensor(wide).to_vector<float>();
    for (std::size_t i = 0; i < h.size(); ++i) {
      const float v = float(h[i]);
      if (std::memcmp(&v, &w[i], 4) != 0)
        r.failures.push_back(detail::cat(narrow, "[", i, "] decodes to ", v, ", stored ", w[i]));
    }
  };
  same_bits("f16", "f16_as_f32", Eigen::half{});
  same_bits("bf16", "bf16_as_f32", Eigen::bfloat16{});
  if (f.tensor("i64").to_vector<std::int64_t>() != std::vector<std::int64_t>{-1, std::int64_t(1) << 40})
    r.failures.push_back("i64 values");
  if (f.tensor("i32").to_vector<std::int32_t>() != std::vector<std::int32_t>{-7, 0, 2147483647, -2147483647 - 1})
    r.failures.push_back("i32 values");
  if (f.tensor("u8").to_vector<std::uint8_t>() != std::vector<std::uint8_t>{0, 1, 255})
    r.failures.push_back("u8 values");
  const io::TensorView& scalar = f.tensor("scalar");
  if (!scalar.shape.empty() || scalar.to_vector<float>() != std::vector<float>{42.5f})
    r.failures.push_back("0-d scalar");
  if (f.tensor("empty").numel() != 0 || f.tensor("empty").shape != std::vector<index_t>{0, 4})
    r.failures.push_back("empty");
  if (f.tensor("matrix_2x3").to_vector<float>() != std::vector<float>{1, 2, 3, 4, 5, 6})
    r.failures.push_back("row-major");
  r.passed = r.failures.empty();
  return r;
}

/// Checks a file or every case under a folder; io cases by their own rule.
inline std::vector<CaseResult> check_path(const std::filesystem::path& path, BackendChoice b) {
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(path)) {
    for (const auto& e : std::filesystem::recursive_directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<CaseResult> results;
  for (const auto& file : files) {
    const bool io_case = file.parent_path().filename() == "io";
    if (io_case) {
      results.push_back(check_io_file(file));
      continue;
    }
    // A checkpoint folder is one case, checked through its expected.safetensors.
    if (file.filename().string().rfind("model", 0) == 0 && std::filesystem::exists(file.parent_path() / "config.json"))
      continue;
    try {
      results.push_back(check_file(file, b));
    } catch (const Error& e) {
      CaseResult r;
      r.path = file.string();
      r.passed = false;
      r.failures.push_back(e.what());
      results.push_back(r);
    }
  }
  return results;
}

}  // namespace moe::golden
