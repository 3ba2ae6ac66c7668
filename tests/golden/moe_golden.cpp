// moe-golden: runs the golden conformance cases through moe.
//
//   moe-golden run CASE.safetensors OUT.safetensors [--backend reference|cpu|cpu-packed|cpu-bf16|cpu-int8|eigen-gemm
//                  |cuda|cuda-bf16] [--isa native|avx2|...]
//   moe-golden check PATH... [--backend reference|cpu|cpu-packed|cpu-bf16|cpu-int8|eigen-gemm|cuda|cuda-bf16|all]
//                  [--isa all|native|avx2|...]
//
// `run` writes every output the case's kind defines, under the golden names
// and dtypes. `check` runs cases (files or folders), prints one line per case,
// backend and ISA with its max error, and exits 1 if any case fails. The CPU
// backends run on every ISA the golden cases cover that this CPU supports
// (AVX2 and the build's native one), or on the one --isa names. The cuda
// backends exist in a MOE_ENABLE_CUDA build (moe_golden.cu) and run the
// layer kinds (moe_block, switch).
#include <cstdio>
#include <iostream>

#include "golden.hpp"

using namespace moe;

namespace {
int usage() {
  std::cerr << "usage: moe-golden run CASE.safetensors OUT.safetensors [--backend "
               "reference|cpu|cpu-packed|cpu-bf16|cpu-int8|eigen-gemm|cuda|cuda-bf16]\n"
               "       moe-golden check PATH... [--backend "
               "reference|cpu|cpu-packed|cpu-bf16|cpu-int8|eigen-gemm|cuda|cuda-bf16|all]\n"
               "  cpu runs backend::Cpu on the weight views, cpu-packed on packed panels (both exact: 1e-5);\n"
               "  cpu-bf16 and cpu-int8 the lower-precision numerics (bounds 1e-2 and 6e-2);\n"
               "  eigen-gemm runs backend::EigenGemm (exact: 1e-5)\n"
               "  cuda and cuda-bf16 run backend::Cuda (exact: 1e-5; bf16: 1e-2) in a MOE_ENABLE_CUDA build\n"
               "  all = reference, cpu, cpu-packed and eigen-gemm\n"
               "  --isa: the CPU backends' instruction set; check's default `all` runs each of avx2 and\n"
               "  this build's native ISA that the CPU supports, run's default is native\n";
  return 2;
}

std::vector<golden::BackendChoice> parse_backends(const std::string& v, bool allow_all) {
  if (v == "reference") return {golden::BackendChoice::reference};
  if (v == "cpu") return {golden::BackendChoice::cpu};
  if (v == "cpu-packed") return {golden::BackendChoice::cpu_packed};
  if (v == "cpu-bf16") return {golden::BackendChoice::cpu_bf16};
  if (v == "cpu-int8") return {golden::BackendChoice::cpu_int8};
  if (v == "eigen-gemm") return {golden::BackendChoice::eigen_gemm};
  if (v == "cuda") return {golden::BackendChoice::cuda};
  if (v == "cuda-bf16") return {golden::BackendChoice::cuda_bf16};
  if (v == "all" && allow_all)
    return {golden::BackendChoice::reference, golden::BackendChoice::cpu, golden::BackendChoice::cpu_packed,
            golden::BackendChoice::eigen_gemm};
  throw Error(ErrorCode::invalid_argument,
              "--backend: expected reference, cpu, cpu-packed, cpu-bf16, cpu-int8, eigen-gemm, cuda, cuda-bf16" +
                  std::string(allow_all ? " or all" : "") + ", got '" + v + "'");
}
}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) return usage();
  const std::string command = argv[1];
  std::vector<std::string> args;
  std::string backend = command == "run" ? "cpu" : "all";
  std::string isa_option = command == "run" ? "native" : "all";
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc)
      backend = argv[++i];
    else if (a.rfind("--backend=", 0) == 0)
      backend = a.substr(10);
    else if (a == "--isa" && i + 1 < argc)
      isa_option = argv[++i];
    else if (a.rfind("--isa=", 0) == 0)
      isa_option = a.substr(6);
    else
      args.push_back(a);
  }
  const std::vector<isa::Level> levels =
      isa_option == "all" ? golden::golden_levels() : std::vector<isa::Level>{isa::parse(isa_option)};
  for (const isa::Level l : levels)  // checked once, up front: not one failure per case
    isa::with_isa(
        l, []<class I>() {}, golden::GoldenIsas{});
  // A backend's label: its name, and for the CPU backends the ISA it ran on.
  const auto on_cpu_kernels = [](golden::BackendChoice b) {
    return b != golden::BackendChoice::reference && b != golden::BackendChoice::eigen_gemm && !golden::on_device(b);
  };
  const auto label = [&](golden::BackendChoice b) {
    return !on_cpu_kernels(b) ? std::string(name(b))
                              : std::string(name(b)) + "@" + std::string(isa::name(golden::current_isa()));
  };

  if (command == "run") {
    if (args.size() != 2) return usage();
    const auto b = parse_backends(backend, false).front();
    golden::current_isa() = levels.front();
    const io::SafeTensors f(args[0]);
    const auto it = golden::kinds().find(f.meta("kind"));
    if (it == golden::kinds().end())
      throw Error(ErrorCode::unsupported,
                  args[0] + ": kind '" + f.meta("kind") + "' is not supported by moe-golden run");
    golden::write(it->second.run(f, b), args[1], {{"kind", f.meta("kind")}, {"backend", label(b)}});
    std::cout << "wrote " << args[1] << "\n";
    return 0;
  }

  if (command == "check") {
    if (args.empty()) return usage();
    int failed = 0, passed = 0, skipped = 0;
    std::vector<std::pair<golden::BackendChoice, isa::Level>> runs;
    for (const auto b : parse_backends(backend, true))
      for (const isa::Level l : levels) {
        runs.emplace_back(b, l);
        if (!on_cpu_kernels(b)) break;  // no CPU kernels of moe's own: no ISA
      }
    for (const auto& [b, level] : runs)
      for (const auto& path : args)
        for (const auto& r : (golden::current_isa() = level, golden::check_path(path, b))) {
          if (r.skipped) {
            ++skipped;
            std::printf("SKIP  %-22s %-10s %s (kind not supported by this backend yet)\n", label(b).c_str(),
                        r.kind.c_str(), r.path.c_str());
            continue;
          }
          r.passed ? ++passed : ++failed;
          if (r.kind == "io" || r.kind == "io_bad") {
            std::printf("%s  %-22s %-10s %s%s%s\n", r.passed ? "PASS" : "FAIL", label(b).c_str(), r.kind.c_str(),
                        r.path.c_str(), r.worst.empty() ? "" : "  rejected: ", r.worst.c_str());
          } else {
            std::printf("%s  %-22s %-10s %s  max_err %.2e (%s)\n", r.passed ? "PASS" : "FAIL", label(b).c_str(),
                        r.kind.c_str(), r.path.c_str(), r.max_error, r.worst.c_str());
          }
          for (const auto& f : r.failures) std::printf("      %s\n", f.c_str());
          if (!r.unchecked.empty()) {
            std::string list;
            for (const auto& u : r.unchecked) list += (list.empty() ? "" : ", ") + u;
            std::printf("      not computed by this backend (gradients need fp32 numerics): %s\n", list.c_str());
          }
        }
    std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed == 0 && passed > 0 ? 0 : 1;
  }
  return usage();
} catch (const std::exception& e) {
  std::cerr << "moe-golden: " << e.what() << "\n";
  return 1;
}
