// Byte-level BPE (GGUF tokenizer model `gpt2`) tokenising as llama.cpp does.
#include "test_support.hpp"

#include <moe/io/gguf_tokenizer.hpp>
#include <moe/text/byte_bpe.hpp>
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
  const text::ByteLevelBpe bpe(io::gguf_bpe_vocab(g));
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
  const text::ByteLevelBpe bpe(good);
  test::require_error([&] { (void)bpe.encode("ok \xC3\x28 bad"); }, ErrorCode::invalid_argument,
                      {"not valid UTF-8", "byte 3"});
  test::require_error([&] { (void)bpe.token_bytes(502); }, ErrorCode::invalid_argument, {"token id 502", "[0, 502)"});
  text::BpeVocab v = good;
  v.pre = "tekken";
  test::require_error([&] { text::ByteLevelBpe{v}; }, ErrorCode::unsupported, {"pre-tokenizer 'tekken'", "smollm"});
  v = good;
  v.merges[7] = "nospace";
  test::require_error([&] { text::ByteLevelBpe{v}; }, ErrorCode::bad_file, {"merge 7", "'nospace'"});
  v = good;
  v.types.pop_back();
  test::require_error([&] { text::ByteLevelBpe{v}; }, ErrorCode::bad_file, {"502 tokens but 501 token types"});
  v = good;
  v.eos_id = 9999;
  test::require_error([&] { text::ByteLevelBpe{v}; }, ErrorCode::bad_file, {"special token id 9999"});
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
