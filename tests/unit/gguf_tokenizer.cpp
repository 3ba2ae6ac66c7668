// The tokenizer of a GGUF file written back as a SentencePiece
// tokenizer.model: it must tokenise as the model the GGUF was made from.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/io/gguf_tokenizer.hpp>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include <fstream>
#include <string>
#include <vector>

using namespace moe;
namespace fs = std::filesystem;

TEST_CASE("gguf_sentencepiece_model: a llama-tokenizer GGUF tokenises as the tokenizer.model it came from") {
  // tests/data/cases/gguf: spm_bpe.model (SentencePiece BPE, byte fallback,
  // Llama's settings) and spm_vocab.gguf, its vocabulary as
  // convert_hf_to_gguf.py writes one, with the ids the Python sentencepiece
  // gives a set of strings under the original model.
  const fs::path dir = fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf";
  const io::Gguf g(dir / "spm_vocab.gguf");
  const std::string proto = io::gguf_sentencepiece_model(g);
  sentencepiece::SentencePieceProcessor ours, original;
  REQUIRE(ours.LoadFromSerializedProto(proto).ok());
  REQUIRE(original.Load((dir / "spm_bpe.model").string()).ok());
  CHECK(ours.GetPieceSize() == original.GetPieceSize());
  CHECK(ours.unk_id() == original.unk_id());
  CHECK(ours.bos_id() == original.bos_id());
  CHECK(ours.eos_id() == original.eos_id());
  for (int i = 0; i < original.GetPieceSize(); ++i) {
    CHECK(ours.IdToPiece(i) == original.IdToPiece(i));
    CHECK(ours.GetScore(i) == original.GetScore(i));
    CHECK(ours.IsByte(i) == original.IsByte(i));
    CHECK(ours.IsControl(i) == original.IsControl(i));
  }
  nlohmann::json expected;
  std::ifstream(dir / "spm_vocab.expected.json") >> expected;
  const std::vector<std::string> strings = expected["strings"];
  const std::vector<std::vector<int>> ids = expected["ids"];
  for (std::size_t k = 0; k < strings.size(); ++k) {
    CAPTURE(strings[k]);
    std::vector<int> got;
    REQUIRE(ours.Encode(strings[k], &got).ok());
    CHECK(got == ids[k]);
    std::string back;
    REQUIRE(ours.Decode(got, &back).ok());
    std::string original_back;
    REQUIRE(original.Decode(ids[k], &original_back).ok());
    CHECK(back == original_back);
  }
}

TEST_CASE("gguf_sentencepiece_model: other tokenizer models are refused by name") {
  const io::Gguf g(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "tiny_v3.gguf");  // tokenizer.ggml.model = llama
  CHECK_NOTHROW((void)io::gguf_sentencepiece_model(g));
  const io::Gguf none(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "mixtral_tiny_f32.gguf");  // no tokenizer
  test::require_error([&] { (void)io::gguf_sentencepiece_model(none); }, ErrorCode::unsupported,
                      {"tokenizer model '(none)'", "only 'llama'"});
}
