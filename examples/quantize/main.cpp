// moe-quantize: a Hugging Face Llama, Mistral or Mixtral folder (a frankenMoE
// from moe-merge included) as a GGUF file laid out as llama.cpp's own
// converter lays one out, its matrices in the chosen type, streaming one
// tensor at a time (moe/io/gguf_from_hf.hpp); a SentencePiece tokenizer.model
// goes in as the file's vocabulary.
//
//   moe-quantize IN_DIR OUT.gguf [--type f32|f16|bf16|q8_0|q5_1|q5_0|q4_1|q4_0]
//
// Quantisation is the gguf package's (llama.cpp's Python reference), byte
// for byte. The k-quants (q4_k_m, q5_k_m, q6_k) are not written yet.
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
  const std::map<std::string, std::uint32_t> types = {{"f32", 0},  {"f16", 1},  {"bf16", 30}, {"q8_0", 8},
                                                      {"q5_1", 7}, {"q5_0", 6}, {"q4_1", 3},  {"q4_0", 2}};
  app.add_option("model", in, "the Hugging Face checkpoint folder")->required();
  app.add_option("out", out, "the GGUF file to write")->required();
  app.add_option("--type", type, "the matrices' type (default q8_0)");
  CLI11_PARSE(app, argc, argv);
  const auto it = types.find(type);
  if (it == types.end()) {
    std::cerr << "moe-quantize: --type " << type
              << " is not supported yet; supported: f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0"
              << " (the k-quants such as q4_k_m are not written yet)\n";
    return 1;
  }
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  moe::io::write_gguf(in, out, it->second, [tty](std::size_t done, std::size_t total, const std::string& name) {
    if (tty)
      std::fprintf(stderr, "\r[%3zu%%] %zu of %zu tensors: %-40s", done * 100 / total, done, total, name.c_str());
    if (tty && done == total) std::fprintf(stderr, "\n");
  });
  const moe::io::Gguf g(out);
  std::printf("wrote %s: %zu tensors, matrices as %s (general.file_type %lld)\n", out.c_str(), g.tensors().size(),
              type.c_str(), static_cast<long long>(g.get_int("general.file_type")));
  return 0;
} catch (const moe::Error& e) {
  std::cerr << "moe-quantize: " << e.what() << "\n";
  return 1;
}
