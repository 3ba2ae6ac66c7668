// moe-quantize: a Hugging Face Llama, Mistral or Mixtral folder (a frankenMoE
// from moe-merge included) as a GGUF file laid out as llama.cpp's own
// converter lays one out, its matrices in the chosen type, streaming one
// tensor at a time (moe/io/gguf_from_hf.hpp); a SentencePiece tokenizer.model
// goes in as the file's vocabulary.
//
//   moe-quantize IN_DIR OUT.gguf [--type q8_0|q4_k_m|...]
//
// Types: f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0 and the k-quant mixes
// q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q3_k_l, q3_k_m, q3_k_s, q2_k. Each
// matrix gets the type llama-quantize gives it (moe/io/gguf_quant_mix.hpp)
// and the bytes llama.cpp's quantisers make (the legacy types as the gguf
// package's reference, the k-quants as ggml's: moe/quant/k_quants.hpp).
#include <moe/io/gguf_from_hf.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <unistd.h>

int main(int argc, char** argv) try {
  CLI::App app{"moe-quantize: a Hugging Face Llama/Mistral/Mixtral folder as a GGUF file"};
  std::string in, out, type = "q8_0";
  std::string names;
  for (const moe::io::QuantMix& m : moe::io::quant_mixes()) names += (names.empty() ? "" : ", ") + m.name;
  app.add_option("model", in, "the Hugging Face checkpoint folder")->required();
  app.add_option("out", out, "the GGUF file to write")->required();
  app.add_option("--type", type, "the file type, as llama-quantize names it (default q8_0): " + names);
  CLI11_PARSE(app, argc, argv);
  const moe::io::QuantMix& mix = moe::io::quant_mix(type);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  moe::io::write_gguf(in, out, mix, [tty](std::size_t done, std::size_t total, const std::string& name) {
    if (tty)
      std::fprintf(stderr, "\r[%3zu%%] %zu of %zu tensors: %-40s", done * 100 / total, done, total, name.c_str());
    if (tty && done == total) std::fprintf(stderr, "\n");
  });
  const moe::io::Gguf g(out);
  std::map<std::string, int> per_type;  // tensors of each ggml type, as llama-quantize's summary
  for (const moe::io::GgufTensor& t : g.tensors()) ++per_type[std::string(t.type_name())];
  std::string counts;
  for (const auto& [name, n] : per_type) counts += moe::detail::cat(counts.empty() ? "" : ", ", n, " ", name);
  std::printf("wrote %s: %s (general.file_type %lld), %zu tensors: %s\n", out.c_str(), mix.name.c_str(),
              static_cast<long long>(g.get_int("general.file_type")), g.tensors().size(), counts.c_str());
  return 0;
} catch (const moe::Error& e) {
  std::cerr << "moe-quantize: " << e.what() << "\n";
  return 1;
}
