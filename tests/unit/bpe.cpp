// Byte-level BPE (GGUF tokenizer model `gpt2`) tokenising as llama.cpp does.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/io/gguf_tokenizer.hpp>
#include <moe/text/byte_bpe.hpp>
#include <moe/text/tokenizer_json.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <string>
#include <vector>

using namespace moe;
namespace fs = std::filesystem;

namespace {
const fs::path cases = fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf";
}  // namespace

TEST_CASE("byte-level BPE: GPT-2's byte alphabet") {
  const auto& chars = text::bpe_detail::byte_chars();
  CHECK(std::set<std::string>(chars.begin(), chars.end()).size() == 256);
  CHECK(chars['A'] == "A");
  CHECK(chars[' '] == "\xC4\xA0");   // U+0120 "Ġ"
  CHECK(chars['\n'] == "\xC4\x8A");  // U+010A "Ċ"
  CHECK(chars[0xAD] == "\xC5\x83");  // the soft hyphen is not printable: U+0143
  CHECK(chars[0xFF] == "\xC3\xBF");  // printable: itself, U+00FF
}

TEST_CASE("byte-level BPE: a GGUF `gpt2` vocabulary tokenises every string as llama.cpp does") {
  // bpe_vocab.gguf: 502 tokens trained by HF tokenizers with SmolLM's
  // pre-tokenizer (tokenizer.ggml.pre = smollm), three control tokens;
  // bpe_vocab.expected.json: llama.cpp's ids for each string, plain and
  // with special tokens parsed (tests/cases/make_bpe_cases.py).
  const io::Gguf g(cases / "bpe_vocab.gguf");
  const text::BpeTokenizer bpe(io::gguf_bpe_vocab(g));
  nlohmann::json expected;
  std::ifstream(cases / "bpe_vocab.expected.json") >> expected;
  CHECK(bpe.vocab_size() == expected["vocab_size"].get<int>());
  CHECK(bpe.vocab().merges.size() == expected["merges"].get<std::size_t>());
  CHECK_FALSE(bpe.adds_bos());  // the file says add_bos_token = false
  for (const auto& c : expected["cases"]) {
    const std::string s = c["text"];
    CAPTURE(s);
    const std::vector<std::int32_t> ids = c["ids"], special = c["ids_special"];
    CHECK(bpe.encode(s, true, false) == ids);
    CHECK(bpe.encode(s, true, true) == special);
    CHECK(bpe.decode(ids) == s);  // the bytes back, whole (control tokens, parsed, would print nothing)
    CHECK(bpe.decode(ids) == c["decoded"].get<std::string>());
    // Printed token by token, by whole characters: the same text.
    text::Utf8Stream stream;
    std::string printed;
    for (const std::int32_t id : ids) {
      const std::string piece = stream.push(bpe.token_bytes(id));
      CHECK(text::bpe_detail::invalid_utf8_at(piece) == std::string_view::npos);
      printed += piece;
    }
    CHECK(printed + stream.flush() == s);
  }
}

TEST_CASE("byte-level BPE: bad vocabularies and text are errors that say what") {
  const io::Gguf g(cases / "bpe_vocab.gguf");
  const text::BpeVocab good = io::gguf_bpe_vocab(g);
  const text::BpeTokenizer bpe(good);
  test::require_error([&] { (void)bpe.encode("ok \xC3\x28 bad"); }, ErrorCode::invalid_argument,
                      {"not valid UTF-8", "byte 3"});
  test::require_error([&] { (void)bpe.token_bytes(502); }, ErrorCode::invalid_argument, {"token id 502", "[0, 502)"});
  text::BpeVocab v = good;
  v.pre = "tekken";
  test::require_error([&] { text::BpeTokenizer{v}; }, ErrorCode::unsupported, {"pre-tokenizer 'tekken'", "smollm"});
  v = good;
  v.merges[7] = "nospace";
  test::require_error([&] { text::BpeTokenizer{v}; }, ErrorCode::bad_file, {"merge 7", "'nospace'"});
  v = good;
  v.types.pop_back();
  test::require_error([&] { text::BpeTokenizer{v}; }, ErrorCode::bad_file, {"502 tokens but 501 token types"});
  v = good;
  v.eos_id = 9999;
  test::require_error([&] { text::BpeTokenizer{v}; }, ErrorCode::bad_file, {"special token id 9999"});
  // A SentencePiece vocabulary is not byte-level BPE.
  const io::Gguf spm(cases / "spm_vocab.gguf");
  test::require_error([&] { (void)io::gguf_bpe_vocab(spm); }, ErrorCode::unsupported, {"tokenizer model 'llama'"});
}

TEST_CASE("Utf8Stream: holds bytes until their character is complete") {
  text::Utf8Stream s;
  CHECK(s.push("a\xF0\x9F") == "a");  // 🙂 = F0 9F 99 82
  CHECK(s.push("\x99") == "");
  CHECK(s.push("\x82 b") == "\xF0\x9F\x99\x82 b");
  CHECK(s.push("\xE4\xB8") == "");
  CHECK(s.flush() == "\xE4\xB8");     // cut short: what is left comes out at the end
  CHECK(s.push("\x80x") == "\x80x");  // a stray continuation byte is not held
}

TEST_CASE("tokenizer.json: HF's byte-level BPE file reads as the GGUF's vocabulary, and is written back") {
  // bpe_vocab.tokenizer.json: the same trained tokenizer as HF saves it;
  // tokenizers_ids: what HF tokenizers itself gives each string.
  const text::BpeTokenizer from_json(text::read_tokenizer_json(cases / "bpe_vocab.tokenizer.json"));
  const io::Gguf g(cases / "bpe_vocab.gguf");
  const text::BpeVocab from_gguf = io::gguf_bpe_vocab(g);
  CHECK(from_json.vocab().tokens == from_gguf.tokens);
  CHECK(from_json.vocab().types == from_gguf.types);
  CHECK(from_json.vocab().merges == from_gguf.merges);
  CHECK_FALSE(from_json.adds_bos());  // no post-processor
  // Written as tokenizer.json and read again: the same tokenizer.
  const test::TempDir dir("bpe-json");
  std::ofstream(dir.path / "tokenizer.json") << text::tokenizer_json(from_gguf).dump(1);
  const text::BpeTokenizer again(text::read_tokenizer_json(dir.path / "tokenizer.json"));
  nlohmann::json expected;
  std::ifstream(cases / "bpe_vocab.expected.json") >> expected;
  for (const auto& c : expected["cases"]) {
    const std::string s = c["text"];
    CAPTURE(s);
    const std::vector<std::int32_t> hf = c["tokenizers_ids"], ids = c["ids"];
    CHECK(from_json.encode(s, true, true) == hf);
    CHECK(from_json.encode(s, true, false) == ids);
    CHECK(again.encode(s, true, true) == hf);
  }
  // BOS from a TemplateProcessing post-processor, as Llama 3's file has it.
  text::BpeVocab with_bos = from_gguf;
  with_bos.bos_id = 1;
  with_bos.add_bos = true;
  std::ofstream(dir.path / "bos.json") << text::tokenizer_json(with_bos).dump();
  const text::BpeTokenizer bos(text::read_tokenizer_json(dir.path / "bos.json"));
  CHECK(bos.adds_bos());
  CHECK(bos.encode("hi").front() == 1);

  // What it does not read is named.
  const auto write = [&](const nlohmann::json& j) {
    std::ofstream(dir.path / "bad.json") << j.dump();
    return dir.path / "bad.json";
  };
  nlohmann::json j = text::tokenizer_json(from_gguf);
  j["model"]["type"] = "WordPiece";
  test::require_error([&] { (void)text::read_tokenizer_json(write(j)); }, ErrorCode::unsupported,
                      {"bad.json", "model type 'WordPiece'"});
  j = text::tokenizer_json(from_gguf);
  j["normalizer"] = {{"type", "NFKC"}};
  test::require_error([&] { (void)text::read_tokenizer_json(write(j)); }, ErrorCode::unsupported, {"normalizer"});
  j = text::tokenizer_json(from_gguf);
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  test::require_error([&] { (void)text::read_tokenizer_json(write(j)); }, ErrorCode::unsupported,
                      {"pre-tokenizer type 'Whitespace'"});
  j = text::tokenizer_json(from_gguf);
  j["decoder"] = {{"type", "Metaspace"}};
  test::require_error([&] { (void)text::read_tokenizer_json(write(j)); }, ErrorCode::unsupported,
                      {"neither a byte-level BPE", "byte-fallback"});
  std::ofstream(dir.path / "bad.json") << "{ not json";
  test::require_error([&] { (void)text::read_tokenizer_json(dir.path / "bad.json"); }, ErrorCode::bad_file,
                      {"not valid JSON"});
}

TEST_CASE("tokenizer.json: byte-fallback BPE (SentencePiece's, as Llama and Mistral folders ship it)") {
  // spm_bpe.tokenizer.json: spm_bpe.model as transformers 5 saves it; the
  // expected file has HF tokenizers' ids for that layout and for the two
  // older layouts of the same tokenizer (Metaspace "first"; Prepend and
  // Replace normalizers), and SentencePiece's own.
  nlohmann::json saved, expected;
  std::ifstream(cases / "spm_bpe.tokenizer.json") >> saved;
  std::ifstream(cases / "spm_bpe.tokenizer.expected.json") >> expected;
  const test::TempDir dir("bpe-spm-json");
  for (const auto& [layout, parts] : expected["layouts"].items()) {
    CAPTURE(layout);
    nlohmann::json j = saved;
    j["normalizer"] = parts["normalizer"];
    j["pre_tokenizer"] = parts["pre_tokenizer"];
    std::ofstream(dir.path / "tokenizer.json") << j.dump();
    const text::BpeTokenizer bpe(text::read_tokenizer_json(dir.path / "tokenizer.json"));
    CHECK(bpe.vocab().byte_fallback);
    CHECK(bpe.vocab().unk_id == 0);
    for (const auto& c : expected["cases"]) {
      const std::string s = c["text"];
      CAPTURE(s);
      const std::vector<std::int32_t> ids = c[layout];
      CHECK(bpe.encode(s, true, true) == ids);  // HF reads special tokens in text always
      if (!s.empty() && s.front() != ' ' && s.find("<s>") == std::string::npos && layout != "prepend_replace")
        CHECK(bpe.decode(ids) == s);
    }
  }
}
