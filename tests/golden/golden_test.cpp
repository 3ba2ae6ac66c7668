// The golden cases (made by an independent implementation) through every
// backend (reference, cpu on views, cpu on packed panels), the safetensors reader on good and malformed files, the
// writer.
#include "test_support.hpp"

#include "../golden/golden.hpp"

#include <cstdlib>
#include <fstream>
#include <unistd.h>
#include <filesystem>

using namespace moe;
namespace fs = std::filesystem;

namespace {
const fs::path golden_dir = fs::path(MOE_TEST_DATA_DIR) / "golden";

void check_results(const std::vector<golden::CaseResult>& results, golden::BackendChoice b, int expected_cases,
                   double tolerance) {
  CHECK(int(results.size()) == expected_cases);
  for (const auto& r : results) {
    CAPTURE(r.path);
    CHECK_FALSE(r.skipped);
    std::string failures;
    for (const auto& f : r.failures) failures += f + "; ";
    CHECK_MESSAGE(r.passed, failures);
    CHECK(r.max_error <= tolerance);
    if (golden::can_train(b)) CHECK(r.unchecked.empty());  // gradients included
  }
}

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("moe-test-" + std::to_string(::getpid()) + "-" + name);
}

/// Runs the kind's cases on backend b: the CPU backends on every ISA the
/// golden cases cover that this CPU supports (forced AVX2 and native).
void check_kind(const std::string& folder, golden::BackendChoice b, int expected_cases, double tolerance = 1e-5) {
  for (const isa::Level level : golden::golden_levels()) {
    const bool has_isa = b != golden::BackendChoice::reference && b != golden::BackendChoice::eigen_gemm;
    if (!has_isa && level != golden::golden_levels().front()) break;
    CAPTURE(isa::name(level));
    golden::current_isa() = level;
    check_results(golden::check_path(golden_dir / folder, b), b, expected_cases, tolerance);
  }
  golden::current_isa() = isa::Level(isa::Native::level);
}
}  // namespace

constexpr golden::BackendChoice all_backends[] = {golden::BackendChoice::reference, golden::BackendChoice::cpu,
                                                  golden::BackendChoice::cpu_packed, golden::BackendChoice::eigen_gemm};

TEST_CASE("golden moe_block cases pass on every backend") {
  for (const auto b : all_backends) check_kind("moe_block", b, 12);
}

TEST_CASE("golden switch cases pass on every backend (both priorities, jitter, HF aux quirk)") {
  for (const auto b : all_backends) check_kind("switch", b, 8);
}

TEST_CASE("golden gradients are computed by every fp32 backend, listed as unchecked by the others") {
  const fs::path grads = golden_dir / "moe_block" / "moe_s4_d64_f128_e8_k2_t33_f32.safetensors";
  for (const auto b : all_backends) CHECK(golden::check_file(grads, b).unchecked.empty());
  const golden::CaseResult r = golden::check_file(grads, golden::BackendChoice::cpu_int8);
  CHECK(r.unchecked == std::vector<std::string>{"grad_gate_w", "grad_logits_aux", "grad_logits_z", "grad_w1", "grad_w2",
                                                "grad_w3", "grad_x"});
}

TEST_CASE("golden layer cases within the bound of each lower-precision numerics (bf16 compute, int8)") {
  // Routing is fp32 in every mode: the integer outputs (chosen experts,
  // counts, capacity drops) must match exactly; the floats within the bound.
  for (const auto b : {golden::BackendChoice::cpu_bf16, golden::BackendChoice::cpu_int8}) {
    CAPTURE(golden::name(b));
    check_kind("moe_block", b, 12, golden::tolerance_for(b, 1e-5));
    check_kind("switch", b, 8, golden::tolerance_for(b, 1e-5));
  }
}

TEST_CASE("golden rmsnorm and attention cases pass on every backend (RoPE, GQA, sliding window, pos0)") {
  for (const auto b : all_backends) {
    check_kind("rmsnorm", b, 2);
    check_kind("attention", b, 4);
  }
}

TEST_CASE("golden Mixtral checkpoints pass on every backend (f32, bf16, sharded, sliding, tied f16, head_dim)") {
  // Every intermediate, the logits, the router losses and 16 greedy tokens
  // decoded with the KV cache; greedy ids must match exactly.
  for (const auto b : all_backends) check_kind("models", b, 6, 1e-4);
}

TEST_CASE("a perturbed golden value makes the check fail") {
  // Rewrite one case with y[0, 0] moved by 1e-3 and with one topk index
  // changed: the checker must catch both.
  const fs::path src = golden_dir / "moe_block" / "moe_s4_d64_f128_e8_k2_t33_f32.safetensors";
  const io::SafeTensors f(src);
  io::SafeTensorsWriter w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  for (const io::TensorView& t : f.tensors()) {
    std::vector<unsigned char> bytes(t.data, t.data + t.nbytes);
    if (t.name == "y") {
      float v;
      std::memcpy(&v, bytes.data(), 4);
      v += 1e-3f;
      std::memcpy(bytes.data(), &v, 4);
    }
    if (t.name == "topk_idx") bytes[0] ^= 1;
    if (t.name == "grad_gate_w") {  // one gradient entry off by 1e-2
      float v;
      std::memcpy(&v, bytes.data() + 8, 4);
      v += 1e-2f;
      std::memcpy(bytes.data() + 8, &v, 4);
    }
    w.add(t.name, t.dtype, t.shape, bytes.data());
  }
  const fs::path out = temp_file("perturbed.safetensors");
  w.write(out);
  const golden::CaseResult r = golden::check_file(out, golden::BackendChoice::reference);
  fs::remove(out);
  CHECK_FALSE(r.passed);
  REQUIRE(r.failures.size() == 3);
  CHECK(r.failures[0].find("grad_gate_w: error") != std::string::npos);
  CHECK(r.failures[1].find("topk_idx: 1 of 66 integers differ") != std::string::npos);
  CHECK(r.failures[2].find("y: error") != std::string::npos);
}

TEST_CASE("safetensors reader decodes every dtype of io/dtypes") {
  const golden::CaseResult r = golden::check_io_file(golden_dir / "io" / "dtypes.safetensors");
  std::string failures;
  for (const auto& f : r.failures) failures += f + "; ";
  CHECK_MESSAGE(r.passed, failures);
  const io::SafeTensors f(golden_dir / "io" / "dtypes.safetensors");
  CHECK(f.meta("kind") == "io");
  CHECK(f.tensor("f32").shape == std::vector<index_t>{3, 5});
  CHECK(f.tensor("bool").dtype == DType::BOOL);
  const auto m = f.tensor("matrix_2x3").matrix();
  CHECK(m.rows == 2);
  CHECK(m.at(1, 0) == 4.0f);
  test::require_error([&] { (void)f.tensor("i32").as<float>(); }, ErrorCode::dtype_mismatch,
                      {"dtypes.safetensors", "'i32'", "I32", "expected F32"});
  test::require_error([&] { (void)f.tensor("i32").matrix(); }, ErrorCode::dtype_mismatch, {"weight dtype"});
  test::require_error([&] { (void)f.tensor("nope"); }, ErrorCode::bad_file, {"no tensor named 'nope'"});
}

TEST_CASE("safetensors reader rejects every malformed file, saying why") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"bad_truncated.safetensors", "truncated"},
      {"bad_header_length.safetensors", "header length"},
      {"bad_json.safetensors", "not valid JSON"},
      {"bad_dtype.safetensors", "unknown dtype F99"},
      {"bad_shape_bytes.safetensors", "shape [3, 6] of F32 needs 72 bytes, offsets span 60"},
      {"bad_overlap.safetensors", "overlap"},
  };
  for (const auto& [file, why] : bad) {
    CAPTURE(file);
    test::require_error([&] { io::SafeTensors f(golden_dir / "io" / file); }, ErrorCode::bad_file, {file, why});
  }
  test::require_error([&] { io::SafeTensors f(golden_dir / "io" / "missing.safetensors"); }, ErrorCode::bad_file,
                      {"missing.safetensors", "cannot open"});
  // Shorter than the length field, and bytes that belong to no tensor.
  const fs::path tiny = temp_file("tiny.safetensors");
  std::ofstream(tiny, std::ios::binary) << "abc";
  test::require_error([&] { io::SafeTensors f(tiny); }, ErrorCode::bad_file, {"too short"});
  io::SafeTensorsWriter w;
  w.add<float>("a", {2}, {1.0f, 2.0f});
  w.write(tiny);
  std::ofstream(tiny, std::ios::binary | std::ios::app) << "trailing";
  test::require_error([&] { io::SafeTensors f(tiny); }, ErrorCode::bad_file, {"cover 8"});
  fs::remove(tiny);
}

TEST_CASE("safetensors writer round-trips values, metadata and alignment") {
  io::SafeTensorsWriter w;
  w.set_metadata("kind", "test");
  w.add<std::uint8_t>("mask", {3}, {1, 0, 1});
  w.add<float>("m", {2, 2}, {1.5f, -2.0f, 3.0f, 0.25f});
  w.add<std::int32_t>("ids", {3}, {7, -1, 42});
  w.add<Eigen::bfloat16>("b", {2}, {Eigen::bfloat16(1.0f), Eigen::bfloat16(-0.5f)});
  w.add<float>("nothing", {0, 4}, {});
  const fs::path p = temp_file("roundtrip.safetensors");
  w.write(p);
  const io::SafeTensors f(p);
  CHECK(f.meta("kind") == "test");
  CHECK(f.tensor("m").as<float>()[3] == 0.25f);  // in place: aligned
  CHECK(f.tensor("ids").to_vector<std::int32_t>() == std::vector<std::int32_t>{7, -1, 42});
  CHECK(f.tensor("mask").to_vector<std::uint8_t>() == std::vector<std::uint8_t>{1, 0, 1});
  CHECK(float(f.tensor("b").as<Eigen::bfloat16>()[1]) == -0.5f);
  CHECK(f.tensor("nothing").numel() == 0);
  for (const auto& t : f.tensors())
    CHECK(reinterpret_cast<std::uintptr_t>(t.data) % std::uintptr_t(size_of(t.dtype)) == 0);
  fs::remove(p);
  test::require_error([&] { w.add<float>("m", {1}, {0.0f}); }, ErrorCode::invalid_argument, {"added twice"});
}

TEST_CASE("moe-golden run output equals what check compares") {
  const fs::path src = golden_dir / "switch" / "switch_s25_d64_e8_t33_cf1.0_relu_mlp.safetensors";
  const io::SafeTensors f(src);
  const golden::Outputs outs = golden::run_switch(f, golden::BackendChoice::cpu);
  const fs::path p = temp_file("run.safetensors");
  golden::write(outs, p, {{"kind", "switch"}});
  const io::SafeTensors written(p);
  for (const char* name : {"y", "y_by_score", "combine"}) {
    CAPTURE(name);
    CHECK(written.tensor(name).shape == f.tensor(name).shape);
    CHECK(golden::compare_floats(f.tensor(name), outs.at(name)) <= 1e-5);
  }
  CHECK(written.tensor("dispatch").to_vector<std::uint8_t>() == f.tensor("dispatch").to_vector<std::uint8_t>());
  CHECK(written.tensor("kept").dtype == DType::U8);
  fs::remove(p);
}
