// moe-convert: a GGUF model (llama.cpp's format) as a Hugging Face checkpoint
// folder, so a GGUF download can be run by moe-mixtral or be the base or an
// expert of a frankenMoE (moe-merge).
//
//   moe-convert IN.gguf OUT_DIR [--dtype bf16|f32] [--out-shard-size 5B]
//
// Architecture `llama` (Llama, Mistral, Mixtral and their frankenMoEs as
// llama.cpp converts them); weights dequantised from F32, F16, BF16, Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K ... Q6_K (moe/io/gguf_convert.hpp); a
// SentencePiece (`llama`) vocabulary becomes tokenizer.model.
#include <moe/io/gguf_convert.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <string>

int main(int argc, char** argv) try {
  CLI::App app{"moe-convert: a GGUF model as a Hugging Face checkpoint folder (config.json, safetensors)"};
  std::string in, out, dtype = "bf16";
  double shard_gb = 5;
  app.add_option("gguf", in, "the GGUF file")->required();
  app.add_option("out_dir", out, "the folder to write")->required();
  app.add_option("--dtype", dtype, "weights of the output: bf16 (default) or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  app.add_option("--out-shard-size", shard_gb, "largest safetensors shard, in GB (default 5)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const moe::io::Gguf g(in);
  const nlohmann::json config = moe::io::gguf_hf_config(g);
  const std::size_t tensors = moe::io::gguf_hf_tensors(g).size();
  const std::string tokenizer =
      moe::io::convert_gguf(g, out, dtype == "f32" ? moe::DType::F32 : moe::DType::BF16, std::size_t(shard_gb * 1e9));
  std::printf("wrote %s: %s, %lld layers, hidden %lld, %zu tensors as %s", out.c_str(),
              config["model_type"].get<std::string>().c_str(), config["num_hidden_layers"].get<long long>(),
              config["hidden_size"].get<long long>(), tensors, dtype.c_str());
  if (config.contains("num_local_experts"))
    std::printf(", %lld experts top-%lld", config["num_local_experts"].get<long long>(),
                config["num_experts_per_tok"].get<long long>());
  std::printf(" (GGUF version %u, %zu tensors in the file)\n", g.version(), g.tensors().size());
  if (tokenizer == "tokenizer.model")
    std::printf("tokenizer.model: the file's SentencePiece vocabulary (%zu pieces)\n",
                g.get_strings("tokenizer.ggml.tokens").size());
  else if (tokenizer == "tokenizer.json")
    std::printf("tokenizer.json: the file's byte-level BPE vocabulary (%zu tokens, %zu merges)\n",
                g.get_strings("tokenizer.ggml.tokens").size(), g.get_strings("tokenizer.ggml.merges").size());
  else
    std::printf(
        "no tokenizer written: the file's tokenizer is '%s' (SentencePiece 'llama' and byte-level BPE "
        "'gpt2' convert)\n",
        g.get_string_or("tokenizer.ggml.model").value_or("none").c_str());
  return 0;
} catch (const moe::Error& e) {
  std::cerr << "moe-convert: " << e.what() << "\n";
  return 1;
}
