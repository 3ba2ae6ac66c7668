#pragma once
/// \file gguf_convert.hpp
/// A GGUF model of llama.cpp's `llama` architecture written out as the
/// Hugging Face checkpoint it came from (the mapping: gguf_hf_names.hpp):
/// config.json from the metadata, every tensor under its transformers name,
/// dequantised to F32 or BF16, q and k rows put back in rotate-half order,
/// and a `llama` (SentencePiece) vocabulary as tokenizer.model, a `gpt2`
/// (byte-level BPE) one as tokenizer.json.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/gguf.hpp"
#include "moe/io/gguf_hf_names.hpp"
#include "moe/io/gguf_tokenizer.hpp"
#include "moe/text/tokenizer_json.hpp"
#include "moe/io/sharded_writer.hpp"
#include "moe/quant/ggml_blocks.hpp"
#include "moe/text/chat.hpp"

namespace moe::io {

/// The values of `t` as `dtype` (F32 or BF16), row-major, into `dst`:
/// dequantised row by row, q and k rows put back in Hugging Face's order.
inline void gguf_hf_fill(const HfTensorFromGguf& t, DType dtype, unsigned char* dst) {
  const GgufTensor& src = *t.source;
  const gguf::TypeTraits tt = *gguf::traits(src.type);
  const index_t cols = src.ne[0], rows = t.shape.size() == 1 ? 1 : t.shape[0];
  const index_t row_bytes = cols / tt.block * tt.bytes, first = t.slice >= 0 ? t.slice * rows : 0;
  const index_t head_rows = t.permuted_heads > 0 ? rows / t.permuted_heads : 0, half = head_rows / 2;
  std::vector<float> row(static_cast<std::size_t>(cols));
  for (index_t r = 0; r < rows; ++r) {
    // Hugging Face row r = (head h, half s, j) sits at ggml row (h, j, s).
    index_t from = r;
    if (head_rows > 0) {
      const index_t h = r / head_rows, i = r % head_rows, s = i / half, j = i % half;
      from = h * head_rows + 2 * j + s;
    }
    quant::dequantize(src.type, tt.name, src.data + (first + from) * row_bytes, cols, row.data());
    if (dtype == DType::F32) {
      std::memcpy(dst + std::size_t(r * cols) * 4, row.data(), std::size_t(cols) * 4);
    } else {
      for (index_t c = 0; c < cols; ++c) {
        const std::uint16_t b = bf16_bits(row[std::size_t(c)]);
        std::memcpy(dst + std::size_t(r * cols + c) * 2, &b, 2);
      }
    }
  }
}

/// Writes `out_dir` as a Hugging Face checkpoint of the GGUF model: config.json
/// and safetensors in shards of at most `shard_bytes`, every tensor as
/// `dtype` (F32 or BF16), and the tokenizer: tokenizer.model when the
/// GGUF's is SentencePiece's (`llama`; gguf_tokenizer.hpp), tokenizer.json
/// (with a tokenizer_config.json) when it is byte-level BPE (`gpt2`), and
/// the chat template in tokenizer_config.json when the GGUF has one. Checks
/// everything (names, types) before writing. Returns the tokenizer file it
/// wrote ("" for none).
inline std::string convert_gguf(const Gguf& g, const std::filesystem::path& out_dir, DType dtype,
                                std::size_t shard_bytes = std::size_t(5) << 30) {
  detail::require(dtype == DType::F32 || dtype == DType::BF16, ErrorCode::invalid_argument,
                  "convert_gguf: the output dtype must be F32 or BF16, got ", name(dtype));
  nlohmann::json config = gguf_hf_config(g);
  const std::vector<HfTensorFromGguf> tensors = gguf_hf_tensors(g);
  for (const HfTensorFromGguf& t : tensors)
    if (!quant::can_dequantize(t.source->type))
      throw Error(ErrorCode::unsupported, detail::cat(g.path().string(), ": tensor '", t.source->name, "' is ",
                                                      t.source->type_name(), ", which moe cannot dequantise yet"));
  // The tokenizer too is built before anything is written: a bad vocabulary leaves no half-written folder.
  const std::string kind = g.get_string_or("tokenizer.ggml.model").value_or("");
  const std::optional<text::BpeVocab> bpe = kind == "gpt2" ? std::optional(gguf_bpe_vocab(g)) : std::nullopt;
  const std::optional<std::string> tokenizer = kind == "llama" ? std::optional<std::string>(gguf_sentencepiece_model(g))
                                               : bpe ? std::optional<std::string>(text::tokenizer_json(*bpe).dump(1))
                                                     : std::nullopt;
  config["torch_dtype"] = dtype == DType::F32 ? "float32" : "bfloat16";
  ShardedWriter w(shard_bytes);
  for (const HfTensorFromGguf& t : tensors)
    w.add(t.name, dtype, t.shape, [&t, dtype](unsigned char* dst) { gguf_hf_fill(t, dtype, dst); });
  w.set_metadata("format", "pt");
  std::filesystem::create_directories(out_dir);
  w.write(out_dir);
  std::ofstream(out_dir / "config.json") << config.dump(2) << "\n";
  if (!tokenizer) return {};
  const std::string file = kind == "llama" ? "tokenizer.model" : "tokenizer.json";
  std::ofstream(out_dir / file, std::ios::binary).write(tokenizer->data(), std::streamsize(tokenizer->size()));
  // Beside it, what transformers' AutoTokenizer reads: a byte-level BPE's
  // special tokens (and no added BOS), and the GGUF's chat template.
  nlohmann::json tokenizer_config = nlohmann::json::object();
  if (bpe) {
    const text::BpeVocab& v = *bpe;
    const auto token = [&](std::int32_t id) {
      return id >= 0 && std::size_t(id) < v.tokens.size() ? nlohmann::json(v.tokens[std::size_t(id)])
                                                          : nlohmann::json();
    };
    tokenizer_config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                        {"bos_token", token(v.bos_id)},
                        {"eos_token", token(v.eos_id)},
                        {"unk_token", token(v.unk_id)},
                        {"add_bos_token", v.add_bos},
                        {"clean_up_tokenization_spaces", false},
                        {"model_max_length", config.value("max_position_embeddings", 8192)}};
  }
  if (const std::optional<text::ChatTemplate> chat = text::gguf_chat_template(g, g.path().string())) {
    if (!bpe) tokenizer_config = {{"bos_token", chat->bos_token()}, {"eos_token", chat->eos_token()}};
    tokenizer_config["chat_template"] = chat->source();
  }
  if (!tokenizer_config.empty()) std::ofstream(out_dir / "tokenizer_config.json") << tokenizer_config.dump(2) << "\n";
  return file;
}

}  // namespace moe::io
