// mergekit-moe's prompt token ids from a tokenizer.model: SentencePiece's
// text with its normaliser off, and the "▁" before the text after BOS
// exactly when transformers puts one there (tests/merge_parity checks the
// same ids against transformers itself).
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/merge/sentencepiece_prompts.hpp>
#ifdef MOE_HAVE_PCRE2
#include <moe/merge/bpe_prompts.hpp>
#endif

#include <sentencepiece_trainer.h>

#include <fstream>

using namespace moe;
namespace fs = std::filesystem;
namespace mg = moe::merge;
using moe::test::TempDir;

namespace {
void write(const fs::path& file, const std::string& text) { std::ofstream(file) << text; }

/// A small BPE tokenizer with SentencePiece's default normaliser (NFKC,
/// extra spaces removed, a "▁" before the text).
fs::path train_tokenizer(const fs::path& dir) {
  std::string corpus;
  for (int i = 0; i < 30; ++i) corpus += "chat with the assistant about code and a story\n";
  write(dir / "corpus.txt", corpus);
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir / "corpus.txt").string() + " --model_prefix=" + (dir / "tokenizer").string() +
      " --vocab_size=60 --model_type=bpe --character_coverage=1.0 --num_threads=1 --hard_vocab_limit=false"
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --minloglevel=2");
  REQUIRE(status.ok());
  return dir / "tokenizer.model";
}

std::vector<std::int32_t> cat(std::int32_t first, const std::vector<std::int32_t>& rest) {
  std::vector<std::int32_t> v{first};
  v.insert(v.end(), rest.begin(), rest.end());
  return v;
}
}  // namespace

TEST_CASE("SentencePiece verbatim: no '▁' before the first word, spaces kept, no normalisation") {
  const TempDir dir("verbatim");
  const text::SentencePiece sp(train_tokenizer(dir.path));
  // SentencePiece's own encoding puts "▁" before "chat": one learnt piece.
  CHECK(sp.encode("chat", false).size() == 1);
  // Verbatim, "chat" without "▁" is not a piece: it splits.
  CHECK(sp.encode_verbatim("chat").size() > 1);
  CHECK(sp.decode(sp.encode_verbatim("chat")) == "chat");
  // A leading space is the "▁": the same ids as SentencePiece's encoding.
  for (const char* w : {"chat", "code", "a story", "the assistant"})
    CHECK_MESSAGE(sp.encode_verbatim(std::string(" ") + w) == sp.encode(w, false), w);
  // Runs of spaces stay; SentencePiece's default collapses them.
  CHECK(sp.decode(sp.encode_verbatim("a  story")) == "a  story");
  CHECK(sp.decode(sp.encode("a  story", false)) == "a story");
  CHECK(sp.encode_verbatim("").empty());
}

TEST_CASE("prompt ids: the prefix after BOS as transformers 5 builds the tokenizer") {
  const TempDir dir("prefix");
  const fs::path model = train_tokenizer(dir.path);
  const auto folder = [&](const std::string& name, const std::string& model_type, const std::string& tokenizer_json) {
    const fs::path d = dir.path / name;
    fs::create_directories(d);
    fs::copy_file(model, d / "tokenizer.model");
    write(d / "config.json", "{\"model_type\": \"" + model_type + "\"}");
    if (!tokenizer_json.empty()) write(d / "tokenizer.json", tokenizer_json);
    return d;
  };
  // Without tokenizer.json: Llama's tokenizer class ("first"): no prefix;
  // Mistral's generic conversion ("always"): a prefix.
  CHECK_FALSE(mg::prefix_after_bos(folder("llama", "llama", "")));
  CHECK(mg::prefix_after_bos(folder("mistral", "mistral", "")));
  // With one, its normaliser and pre-tokenizer decide, whatever the model.
  CHECK(mg::prefix_after_bos(
      folder("prepend", "llama",
             R"({"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
          {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}, "pre_tokenizer": null})")));
  CHECK_FALSE(mg::prefix_after_bos(
      folder("first", "mistral",
             R"({"normalizer": null, "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
          "prepend_scheme": "first", "split": false}})")));
  CHECK(mg::prefix_after_bos(
      folder("always", "llama",
             R"({"normalizer": null, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Metaspace",
          "replacement": "\u2581", "prepend_scheme": "always", "split": false}]}})")));
  CHECK(mg::prefix_after_bos(
      folder("old-metaspace", "llama", R"({"pre_tokenizer": {"type": "Metaspace", "add_prefix_space": true}})")));

  // The ids: BOS, then the prompt verbatim, after a space when prefixed.
  const text::SentencePiece sp(model);
  const mg::PromptTokenizer llama = mg::sentencepiece_prompts(dir.path / "llama");
  const mg::PromptTokenizer mistral = mg::sentencepiece_prompts(dir.path / "mistral");
  CHECK(llama.pad_id == 1);
  CHECK(llama.encode("chat") == cat(1, sp.encode_verbatim("chat")));
  CHECK(mistral.encode("chat") == cat(1, sp.encode("chat", false)));
  const std::vector<std::int32_t> spaced = mistral.encode("the  assistant");
  CHECK(sp.decode(std::vector<std::int32_t>(spaced.begin() + 1, spaced.end())) == "the  assistant");

  fs::remove(dir.path / "llama" / "tokenizer.model");
  test::require_error([&] { (void)mg::sentencepiece_prompts(dir.path / "llama"); }, ErrorCode::bad_file,
                      {"no tokenizer.model", "random or uniform_random"});
}

#ifdef MOE_HAVE_PCRE2
TEST_CASE("tokenizer_json_prompts: a folder with only tokenizer.json gives the ids tokenizer.model gives") {
  // spm_bpe.model and the tokenizer.json transformers saves of it (Metaspace
  // "always"), and the same file with the "first" scheme: the BPE engine on
  // tokenizer.json must give mergekit's ids exactly as SentencePiece does on
  // tokenizer.model (two implementations, one answer).
  const fs::path cases = fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf";
  const test::TempDir dir("prompts-json");
  nlohmann::json saved;
  std::ifstream(cases / "spm_bpe.tokenizer.json") >> saved;
  for (const std::string scheme : {"always", "first"}) {
    CAPTURE(scheme);
    const fs::path d = dir.path / scheme;
    fs::create_directories(d);
    std::ofstream(d / "config.json") << R"({"model_type": "mistral"})";
    nlohmann::json j = saved;
    if (scheme == "first") {
      j["normalizer"] = nullptr;
      j["pre_tokenizer"] = {
          {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}};
    }
    std::ofstream(d / "tokenizer.json") << j.dump();
    std::ofstream(d / "tokenizer_config.json") << R"({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true})";
    fs::copy_file(cases / "spm_bpe.model", d / "tokenizer.model");
    const mg::PromptTokenizer sp = mg::sentencepiece_prompts(d);
    fs::remove(d / "tokenizer.model");
    const mg::PromptTokenizer bpe = mg::tokenizer_json_prompts(d);
    CHECK(bpe.pad_id == sp.pad_id);
    for (const std::string prompt :
         {"chat", "the  assistant", "Numbers: 0 1 2 3", " leading", "Straße 🙂", "code\n  x"}) {
      CAPTURE(prompt);
      CHECK(bpe.encode(prompt) == sp.encode(prompt));
    }
  }
}
#endif
