// The tokenizer of a GGUF file written back as a SentencePiece
// tokenizer.model: it must tokenise as the model the GGUF was made from.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/io/gguf_tokenizer.hpp>
#include <moe/text/sentencepiece.hpp>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include <algorithm>
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

TEST_CASE("StreamDecoder: a character spelt in byte pieces prints whole, once it is complete") {
  // spm_bpe.model has byte fallback: "🙂" and "中" are not pieces of its own,
  // so they encode as their UTF-8 bytes, one <0x..> piece each.
  const text::SentencePiece sp(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "spm_bpe.model");
  const std::string text = "x 🙂 x中y";
  const std::vector<std::int32_t> ids = sp.encode(text, false);
  std::vector<std::int32_t> byte_pieces;
  for (const std::int32_t id : ids)
    if (sp.byte_of(id)) byte_pieces.push_back(id);
  REQUIRE(byte_pieces.size() == 4 + 3);
  CHECK(*sp.byte_of(byte_pieces[0]) == 0xF0);  // 🙂 = F0 9F 99 82
  CHECK(*sp.byte_of(byte_pieces[3]) == 0x82);
  CHECK_FALSE(sp.byte_of(ids.front()));
  text::StreamDecoder stream(sp);
  std::string printed;
  std::vector<std::string> chunks;
  for (const std::int32_t id : ids) {
    chunks.push_back(stream.push(id));
    printed += chunks.back();
  }
  CHECK(printed == sp.decode(ids));
  CHECK(printed.find("\xEF\xBF\xBD") == std::string::npos);  // no U+FFFD on the way
  CHECK(std::count(chunks.begin(), chunks.end(), "🙂") + std::count(chunks.begin(), chunks.end(), " 🙂") == 1);

  // Bytes that can never make a character (a continuation byte with no lead,
  // a lead cut short by an ordinary piece) print as U+FFFD, as decode() does.
  const std::int32_t lead = byte_pieces[0];
  const std::int32_t x = sp.encode("x", false).back();
  text::StreamDecoder broken(sp);
  std::string out;
  for (const std::int32_t id : {x, byte_pieces[1], lead, x}) out += broken.push(id);
  CHECK(out == sp.decode(std::vector<std::int32_t>{x, byte_pieces[1], lead, x}));
  CHECK(out.find("\xEF\xBF\xBD") != std::string::npos);
}
