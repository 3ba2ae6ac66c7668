// moe-mixtral: run a Hugging Face Mixtral checkpoint folder (or a dense
// Mistral or Llama one: model_type "mistral" / "llama"), or a GGUF file of
// one as llama.cpp writes them (--model FILE.gguf: its weights in their
// stored types, quantised ones included).
//
//   moe-mixtral make-tiny --out DIR [--seed S] [--dtype bf16|f32|f16] [--shards N]
//                         [--family mixtral|mistral|llama]
//   moe-mixtral generate --model DIR (--prompt TEXT | --tokens 1,2,3) [--max-new N]
//                        [--temperature T] [--top-k K] [--top-p P] [--seed S]
//   moe-mixtral logits --model DIR --tokens 1,2,3 --out FILE.safetensors [--greedy N]
//   moe-mixtral chat --model DIR [--system TEXT] [--messages FILE.json] [--template FILE]
//   moe-mixtral perplexity --model DIR --text FILE [--context N] [--stride S]
//   moe-mixtral eval --model DIR --tasks FILE.jsonl [--out FILE.json]
//   moe-mixtral tokenize --model DIR --prompt TEXT [--special] [--no-bos]
//   moe-mixtral info --model DIR
//
// Text goes in and out through the folder's tokenizer.model, or a GGUF's
// own vocabulary: SentencePiece (`llama`: Llama, Mistral, Mixtral) or
// byte-level BPE (`gpt2`: SmolLM, Llama 3, Qwen...), when there is one and
// this program was built with its library (SentencePiece, PCRE2); token ids
// otherwise. `chat` builds each prompt with the model's own chat template
// (tokenizer_config.json's or chat_template.jinja, or the GGUF's).
#include <moe/models/mixtral/loglikelihood.hpp>
#include <moe/models/mixtral/perplexity.hpp>
#include <moe/models/mixtral/routing_svg.hpp>
#include <moe/moe.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <moe/io/gguf_tokenizer.hpp>
#include <moe/text/chat.hpp>
#include <moe/text/utf8.hpp>
#ifdef MOE_HAVE_PCRE2
#include <moe/text/byte_bpe.hpp>
#include <moe/text/tokenizer_json.hpp>
#endif
#ifdef MOE_HAVE_SENTENCEPIECE
#include <moe/text/sentencepiece.hpp>
#include <sentencepiece_trainer.h>

#include <fcntl.h>
#endif
#include <unistd.h>

namespace fs = std::filesystem;
namespace mx = moe::mixtral;

namespace {

std::vector<std::int32_t> parse_tokens(const std::string& list) {
  std::vector<std::int32_t> ids;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    moe::detail::require(used == item.size() && !item.empty() && v >= INT32_MIN && v <= INT32_MAX,
                         moe::ErrorCode::invalid_argument, "--tokens: '", item,
                         "' is not a token id (expected comma-separated integers, e.g. 1,2,3)");
    ids.push_back(std::int32_t(v));
  }
  moe::detail::require(!ids.empty(), moe::ErrorCode::invalid_argument, "--tokens: no token ids given");
  return ids;
}

std::string join(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

/// Text in and out of the model, whichever tokenizer its vocabulary needs:
/// SentencePiece (a folder's tokenizer.model, a GGUF's `llama` vocabulary)
/// or BPE (a GGUF's `gpt2` vocabulary, a folder's tokenizer.json).
struct Vocabulary {
  std::string kind;
  std::int32_t bos = -1;
  /// Token ids of text; BOS first if asked and the vocabulary has one;
  /// control tokens read as such with `special` (byte-level BPE only).
  std::function<std::vector<std::int32_t>(const std::string& text, bool add_bos, bool special)> encode;
  std::function<std::string(std::span<const std::int32_t>)> decode;
  /// A printer for a stream of tokens: push(id) returns the text it
  /// completes; flush() what was held back at the end.
  struct Printer {
    std::function<std::string(std::int32_t)> push;
    std::function<std::string()> flush;
  };
  std::function<Printer()> printer;
};

/// The model's vocabulary, or none (token ids only): why not, in `missing`.
std::optional<Vocabulary> open_vocabulary(const fs::path& model, std::string& missing) {
  std::string kind = "llama";
  std::optional<moe::io::Gguf> g;
  if (moe::io::Checkpoint::is_gguf(model)) {
    g.emplace(model);
    kind = g->get_string_or("tokenizer.ggml.model").value_or("(none)");
  } else if (!fs::exists(model / "tokenizer.model")) {
    if (!fs::exists(model / "tokenizer.json")) {
      missing = model.string() + " has no tokenizer.model or tokenizer.json";
      return std::nullopt;
    }
    kind = "tokenizer.json";  // a BPE tokenizer.json, byte-level or byte-fallback (others are refused by name)
  }
  if (kind == "llama") {
#ifdef MOE_HAVE_SENTENCEPIECE
    using SP = moe::text::SentencePiece;
    const auto sp = g ? std::make_shared<SP>(SP::Proto{moe::io::gguf_sentencepiece_model(*g), model.string()})
                      : std::make_shared<SP>(model / "tokenizer.model");
    Vocabulary v;
    v.kind = "SentencePiece";
    v.bos = sp->bos_id();
    v.encode = [sp](const std::string& text, bool add_bos, bool special) {
      if (!special) return sp->encode(text, add_bos);
      std::vector<std::int32_t> ids = sp->encode_special(text);
      if (add_bos && sp->bos_id() >= 0) ids.insert(ids.begin(), sp->bos_id());
      return ids;
    };
    v.decode = [sp](std::span<const std::int32_t> ids) { return sp->decode(ids); };
    v.printer = [sp] {
      auto stream = std::make_shared<moe::text::StreamDecoder>(*sp);
      return Vocabulary::Printer{[stream](std::int32_t id) { return stream->push(id); }, [] { return std::string(); }};
    };
    return v;
#else
    missing = "this build has no SentencePiece (apt-get install libsentencepiece-dev)";
    return std::nullopt;
#endif
  }
  if (kind == "gpt2" || kind == "tokenizer.json") {
#ifdef MOE_HAVE_PCRE2
    const auto bpe = std::make_shared<moe::text::BpeTokenizer>(g ? moe::io::gguf_bpe_vocab(*g)
                                                                 : moe::text::read_tokenizer_folder(model));
    Vocabulary v;
    v.kind = bpe->vocab().byte_fallback ? "byte-fallback BPE" : "byte-level BPE";
    v.bos = bpe->bos_id();
    v.encode = [bpe](const std::string& text, bool add_bos, bool special) {
      return bpe->encode(text, add_bos, special);
    };
    v.decode = [bpe](std::span<const std::int32_t> ids) { return bpe->decode(ids); };
    v.printer = [bpe] {
      auto stream = std::make_shared<moe::text::Utf8Stream>();
      return Vocabulary::Printer{[bpe, stream](std::int32_t id) { return stream->push(bpe->token_bytes(id)); },
                                 [stream] { return stream->flush(); }};
    };
    return v;
#else
    missing = "this build has no PCRE2 for its BPE vocabulary (apt-get install libpcre2-dev)";
    return std::nullopt;
#endif
  }
  missing = model.string() + ": tokenizer model '" + kind + "' is not one this reads (llama, gpt2)";
  return std::nullopt;
}

moe::DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return moe::DType::F32;
  if (s == "bf16" || s == "bfloat16") return moe::DType::BF16;
  if (s == "f16" || s == "float16") return moe::DType::F16;
  throw moe::Error(moe::ErrorCode::invalid_argument, "--dtype: expected f32, bf16 or f16, got '" + s + "'");
}

// ---- make-tiny ------------------------------------------------------------------

// What the built-in tokenizer learns from: enough text for a few hundred
// pieces, and a fair description of what this model is.
constexpr const char* tiny_corpus =
    R"(A mixture of experts layer replaces the dense feed forward network of a transformer.
A router looks at each token and sends it to two of eight experts.
The experts are small feed forward networks; each token is processed by the experts it was sent to.
The outputs of the experts are weighted by the router's softmax over the chosen logits and added up.
Mixtral uses eight experts and two experts per token, with grouped query attention and rotary position embeddings.
Switch Transformers route each token to one expert, and drop tokens when an expert is over its capacity.
The load balancing loss keeps the router from sending every token to the same expert.
This tiny model has random weights, so the text it writes is noise, but every step of the computation is real.
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.
)";

#ifdef MOE_HAVE_SENTENCEPIECE
/// Trains a small BPE tokenizer into dir/tokenizer.model with byte fallback,
/// as Mistral's and Llama's have: any text encodes (a character the corpus
/// lacks becomes its UTF-8 bytes, <0x..> pieces), and llama.cpp, which looks
/// up the newline's byte piece when it loads a SentencePiece vocabulary, can
/// run the GGUF files made from these models.
void train_tiny_tokenizer(const fs::path& dir, int vocab_size) {
  const fs::path corpus = dir / "tokenizer-corpus.txt";
  {
    std::ofstream out(corpus);
    for (int i = 0; i < 4; ++i) out << tiny_corpus;
  }
  const std::string args = moe::detail::cat(
      "--input=", corpus.string(), " --model_prefix=", (dir / "tokenizer").string(), " --vocab_size=", vocab_size,
      " --model_type=bpe --character_coverage=1.0 --byte_fallback=true --num_threads=1 --hard_vocab_limit=false",
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --minloglevel=2");
  // SentencePiece 0.1.x logs the command line before it reads --minloglevel:
  // stderr is set aside while it trains (a failure still comes back in status).
  std::fflush(stderr);
  const int saved_stderr = ::dup(2), null_fd = ::open("/dev/null", O_WRONLY);
  if (saved_stderr >= 0 && null_fd >= 0) ::dup2(null_fd, 2);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  std::cerr.flush();
  if (saved_stderr >= 0 && null_fd >= 0) ::dup2(saved_stderr, 2);
  for (const int fd : {saved_stderr, null_fd})
    if (fd >= 0) ::close(fd);
  fs::remove(corpus);
  fs::remove(dir / "tokenizer.vocab");
  moe::detail::require(status.ok(), moe::ErrorCode::bad_file,
                       "training the tiny tokenizer failed: ", status.ToString());
}
#endif

mx::Family parse_family(const std::string& s) {
  for (mx::Family f : {mx::Family::mixtral, mx::Family::mistral, mx::Family::llama})
    if (s == mx::name(f)) return f;
  throw moe::Error(moe::ErrorCode::invalid_argument, "--family: expected mixtral, mistral or llama, got '" + s + "'");
}

int make_tiny(const fs::path& out, std::uint64_t seed, const std::string& dtype, int shards, bool tokenizer,
              const std::string& family) {
  fs::create_directories(out);
  mx::Config c = mx::tiny_config();
  c.dtype = parse_dtype(dtype);
  c.family = parse_family(family);
  if (c.dense()) c.num_experts = c.experts_per_token = 1;
#ifdef MOE_HAVE_SENTENCEPIECE
  if (tokenizer) {
    train_tiny_tokenizer(out, 512);
    c.vocab_size = moe::text::SentencePiece(out / "tokenizer.model").vocab_size();
  }
#else
  if (tokenizer) std::cerr << "moe-mixtral: built without SentencePiece; writing no tokenizer (token ids only)\n";
  tokenizer = false;
#endif
  if (!tokenizer) fs::remove(out / "tokenizer.model");
  // Mixtral-8x7B-Instruct's chat template, so that `chat` runs on the built-in model.
  if (tokenizer)
    std::ofstream(out / "tokenizer_config.json")
        << nlohmann::
               json{{"bos_token", "<s>"},
                    {"eos_token", "</s>"},
                    {"chat_template",
                     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % "
                     "2 == 0) "
                     "%}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% "
                     "endif "
                     "%}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif "
                     "message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ "
                     "raise_exception('Only "
                     "user and assistant roles are supported!') }}{% endif %}{% endfor %}"}}
                   .dump(1)
        << "\n";
  else
    fs::remove(out / "tokenizer_config.json");
  mx::write_random_checkpoint(out, c, seed, shards);
  const std::string ffn =
      c.dense() ? std::string("dense FFN") : moe::detail::cat(c.num_experts, " experts top-", c.experts_per_token);
  std::printf("wrote %s: %s, vocab %lld, hidden %lld, %lld layers, %s, %s, seed %llu%s\n", out.string().c_str(),
              mx::name(c.family), (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.num_layers,
              ffn.c_str(), std::string(moe::name(*c.dtype)).c_str(), (unsigned long long)seed,
              tokenizer ? ", with tokenizer.model" : "");
  return 0;
}

// ---- generate / logits ------------------------------------------------------------

struct RunOptions {
  fs::path model;
  std::optional<std::string> prompt;
  std::optional<std::string> tokens;
  std::string backend = "cpu";
  std::string isa = "native";
  int threads = 0;
  bool pack = false;
  bool no_bos = false;
  bool special = false;                ///< read control tokens in the prompt text (chat markers)
  bool populate = false;               ///< read every weight page in at load (generate, logits)
  bool no_mmap = false;                ///< copy the files into memory on huge pages (MappedFile::read_into_memory)
  std::string numerics = "as-stored";  ///< cpu: as-stored, or block-q8 (llama.cpp's arithmetic on block weights)
  fs::path routing_svg;                ///< generate: where to draw the routing picture (empty: none)
};

/// "cpu@avx512-bf16", "reference": the backend and, for the CPU one, its instruction set.
template <class B>
std::string backend_label(const B& b) {
  if constexpr (requires { typename B::isa_type; })
    return std::string(b.name()) + "@" + std::string(B::isa_type::name);
  else
    return std::string(b.name());
}

template <class Fn>
int with_model(const RunOptions& o, Fn&& fn) {
  if (o.backend == "reference") {
    const mx::Model<moe::backend::Reference> model(o.model);
    if (o.no_mmap)
      model.checkpoint().read_into_memory();
    else if (o.populate)
      model.checkpoint().populate();
    return fn(model);
  }
  moe::detail::require(o.backend == "cpu", moe::ErrorCode::invalid_argument,
                       "--backend: expected cpu or reference, got '", o.backend, "'");
  moe::detail::require(o.numerics == "as-stored" || o.numerics == "block-q8", moe::ErrorCode::invalid_argument,
                       "--numerics: expected as-stored or block-q8, got '", o.numerics, "'");
  // The kernels' instruction set: the best this program carries that the CPU runs, or a lower one asked for.
  return moe::isa::with_isa(
      moe::isa::parse(o.isa),
      [&]<class I>() {
        const auto run = [&]<class Cpu>() {
          mx::Model<Cpu> model(o.model, o.threads > 0 ? Cpu(o.threads) : Cpu());
          // Every weight page read in before the clock starts, as llama.cpp's
          // MAP_POPULATE does: generation then meets no page faults.
          if (o.no_mmap)
            model.checkpoint().read_into_memory();
          else if (o.populate)
            model.checkpoint().populate();
          if (o.pack) std::fprintf(stderr, "packed experts: %.1f MiB\n", double(model.pack_experts()) / (1 << 20));
          return fn(model);
        };
        if (o.numerics == "block-q8") return run.template operator()<moe::backend::Cpu<moe::numerics::BlockQ8, I>>();
        return run.template operator()<moe::backend::Cpu<moe::numerics::AsStored, I>>();
      },
      moe::isa::Offered{});
}

int generate(const RunOptions& o, const mx::GenerateOptions& g) {
  return with_model(o, [&](const auto& model) {
    const mx::Config& c = model.config();
    std::vector<std::int32_t> prompt;
    std::string missing;
    const std::optional<Vocabulary> vocab = open_vocabulary(o.model, missing);
    if (o.tokens) {
      prompt = parse_tokens(*o.tokens);
    } else {
      moe::detail::require(vocab.has_value(), moe::ErrorCode::invalid_argument, missing,
                           "; give --tokens instead of --prompt");
      prompt = vocab->encode(*o.prompt, !o.no_bos, o.special);
    }
    mx::GenerateOptions opts = g;
    opts.stop_at_eos = opts.stop_tokens.empty();  // --stop names the whole stop set

    std::function<void(std::int32_t)> print = [first = true](std::int32_t id) mutable {
      std::printf("%s%d", first ? "" : ",", id);
      first = false;
      std::fflush(stdout);
    };
    std::optional<Vocabulary::Printer> printer;
    if (vocab) {
      printer = vocab->printer();
      std::printf("%s", vocab->decode(prompt).c_str());
      print = [&](std::int32_t id) {
        std::printf("%s", printer->push(id).c_str());
        std::fflush(stdout);
      };
    }
    if (o.tokens || !o.prompt) std::printf("prompt ids: %s\ngenerated ids: ", join(prompt).c_str());
    const mx::GenerateResult r = mx::generate(model, prompt, opts, print);
    if (printer) std::printf("%s", printer->flush().c_str());
    std::printf("\n\n");
    const char* why = r.end == mx::GenerateResult::End::stop_token     ? "stop token"
                      : r.end == mx::GenerateResult::End::context_full ? "context full"
                                                                       : "max-new reached";
    std::printf("%zu new tokens (%s); backend %s\n", r.tokens.size(), why, backend_label(model.backend()).c_str());
    std::printf("prefill: %lld tokens in %.3f s = %.1f tokens/s\n", (long long)r.prompt_tokens, r.prefill_seconds,
                r.prefill_tokens_per_second());
    std::printf("decode:  %zu tokens in %.3f s = %.1f tokens/s\n", r.tokens.size() > 0 ? r.tokens.size() - 1 : 0,
                r.decode_seconds, r.decode_tokens_per_second());
    if (c.dense()) {
      std::printf("dense model (%s): one FFN per layer, no routing\n", mx::name(c.family));
      moe::detail::require(o.routing_svg.empty(), moe::ErrorCode::invalid_argument,
                           "--routing-svg: a dense model routes nothing to draw");
      return 0;
    }
    if (!o.routing_svg.empty()) {
      // The tokens the model ran (the prompt and every new token but the
      // last), run again in one pass for their routing.
      std::vector<std::int32_t> ran = prompt;
      if (!r.tokens.empty()) ran.insert(ran.end(), r.tokens.begin(), r.tokens.end() - 1);
      mx::KvCache cache = model.new_cache();
      const mx::StepOutput out = model.forward(ran, cache, mx::Logits::last);
      std::vector<std::string> labels;
      for (std::int32_t id : ran) {
        std::string label = std::to_string(id);
        if (vocab) label = id == vocab->bos ? "<s>" : vocab->decode(std::span(&id, 1));
        labels.push_back(label);
      }
      std::ofstream svg(o.routing_svg);
      svg << mx::routing_svg(out.routing, labels, "Where each token went (" + o.model.filename().string() + ")");
      moe::detail::require(bool(svg), moe::ErrorCode::bad_file, o.routing_svg.string(), ": cannot write");
      std::printf("wrote %s: %zu tokens x %zu layers\n", o.routing_svg.string().c_str(), ran.size(),
                  out.routing.size());
    }
    std::printf("experts used per layer (tokens routed to expert 0..%lld, prompt and generated):\n",
                (long long)c.num_experts - 1);
    for (std::size_t l = 0; l < r.expert_tokens.size(); ++l) {
      std::printf("  layer %2zu:", l);
      for (moe::index_t n : r.expert_tokens[l]) std::printf(" %4lld", (long long)n);
      std::printf("\n");
    }
    return 0;
  });
}

int logits(const RunOptions& o, const fs::path& out, int greedy) {
  moe::detail::require(o.tokens.has_value(), moe::ErrorCode::invalid_argument, "logits: --tokens is required");
  moe::detail::require(greedy >= 0, moe::ErrorCode::invalid_argument, "--greedy: expected >= 0, got ", greedy);
  const std::vector<std::int32_t> ids = parse_tokens(*o.tokens);
  return with_model(o, [&](const auto& model) {
    const moe::index_t V = model.config().vocab_size;
    mx::KvCache cache = model.new_cache();
    const mx::StepOutput prefill = model.forward(ids, cache, mx::Logits::all);
    std::vector<std::int32_t> greedy_ids;
    moe::Matrix last = prefill.logits.bottomRows(1);
    for (int i = 0; i < greedy; ++i) {
      greedy_ids.push_back(mx::argmax({last.data(), std::size_t(V)}));
      if (i + 1 < greedy) last = model.forward(std::span(&greedy_ids.back(), 1), cache, mx::Logits::last).logits;
    }
    moe::io::SafeTensorsWriter w;
    w.set_metadata("producer", "moe-mixtral logits");
    w.set_metadata("input_ids", join(ids));
    w.add("logits", moe::DType::F32, {moe::index_t(ids.size()), V}, prefill.logits.data());
    w.add("greedy_ids", {moe::index_t(greedy_ids.size())}, greedy_ids);
    // Every layer's router logits (as transformers' output_router_logits):
    // how close each routing decision was, where two runs disagree.
    std::vector<float> router;
    for (const moe::Routing& r : prefill.routing) router.insert(router.end(), r.logits.begin(), r.logits.end());
    if (!prefill.routing.empty())
      w.add("router_logits", moe::DType::F32,
            {moe::index_t(prefill.routing.size()), moe::index_t(ids.size()), prefill.routing.front().experts},
            router.data());
    w.write(out);
    std::printf("wrote %s: logits [%zu, %lld], greedy_ids [%zu] = %s\n", out.string().c_str(), ids.size(), (long long)V,
                greedy_ids.size(), join(greedy_ids).c_str());
    return 0;
  });
}

int tokenize(const RunOptions& o) {
  std::string missing;
  const std::optional<Vocabulary> vocab = open_vocabulary(o.model, missing);
  moe::detail::require(vocab.has_value(), moe::ErrorCode::invalid_argument, missing, ": nothing to tokenise with");
  const std::vector<std::int32_t> ids = vocab->encode(*o.prompt, !o.no_bos, o.special);
  std::printf("%s, %zu tokens: %s\n", vocab->kind.c_str(), ids.size(), join(ids).c_str());
  return 0;
}

int info(const RunOptions& o, bool check_values) {
  return with_model(o, [&](const auto& model) {
    const mx::Config& c = model.config();
    std::cout << mx::to_json(c).dump(2) << "\n";
    std::printf("files: %zu, weight bytes: %zu (%.1f MiB)\n", model.checkpoint().file_count(), model.weight_bytes(),
                double(model.weight_bytes()) / (1 << 20));
    if (check_values) {  // throws, naming the first NaN or infinity
      const std::size_t n = moe::io::check_values(model.checkpoint());
      std::printf("values: all %zu weights finite\n", n);
    }
    return 0;
  });
}

// ---- chat ---------------------------------------------------------------------------

struct ChatOptions {
  std::string system;      ///< a system message to start the conversation with
  fs::path messages;       ///< a JSON file of messages: answer it once and exit
  fs::path template_file;  ///< a chat template to use in place of the model's
};

/// The model's chat template, or the one given with its special tokens.
moe::text::ChatTemplate open_chat_template(const RunOptions& o, const ChatOptions& c) {
  std::optional<moe::text::ChatTemplate> t =
      moe::io::Checkpoint::is_gguf(o.model) ? moe::text::gguf_chat_template(moe::io::Gguf(o.model), o.model.string())
                                            : moe::text::read_chat_template(o.model);
  if (!c.template_file.empty()) {
    std::ifstream in(c.template_file, std::ios::binary);
    moe::detail::require(in.good(), moe::ErrorCode::bad_file, "--template: cannot read ", c.template_file.string());
    std::ostringstream text;
    text << in.rdbuf();
    return {text.str(), t ? t->bos_token() : "", t ? t->eos_token() : "", c.template_file.string()};
  }
  moe::detail::require(t.has_value(), moe::ErrorCode::invalid_argument, o.model.string(),
                       " has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json, no "
                       "tokenizer.chat_template in a GGUF); give one with --template FILE");
  return *t;
}

int chat(const RunOptions& o, const mx::GenerateOptions& g, const ChatOptions& c) {
  return with_model(o, [&](const auto& model) {
    std::string missing;
    const std::optional<Vocabulary> vocab = open_vocabulary(o.model, missing);
    moe::detail::require(vocab.has_value(), moe::ErrorCode::invalid_argument,
                         "chat needs the model's vocabulary: ", missing);
    const moe::text::ChatTemplate tmpl = open_chat_template(o, c);
    // A reply ends at EOS, or at the token the template writes after a reply.
    mx::GenerateOptions opts = g;
    opts.stop_at_eos = true;
    if (const std::string marker = tmpl.end_marker(); !marker.empty())
      if (const std::vector<std::int32_t> ids = vocab->encode(marker, false, true); ids.size() == 1)
        opts.stop_tokens.push_back(ids[0]);
    const mx::Config& config = model.config();
    const auto ends_reply = [&](std::int32_t id) {
      return (config.eos_token_id && id == *config.eos_token_id) ||
             std::find(opts.stop_tokens.begin(), opts.stop_tokens.end(), id) != opts.stop_tokens.end();
    };

    nlohmann::json messages = nlohmann::json::array();
    if (!c.system.empty()) messages.push_back({{"role", "system"}, {"content", c.system}});
    // One reply to `messages`: the prompt rebuilt from the whole
    // conversation, the reply streamed to stdout (its end marker not
    // printed) and returned.
    const auto reply = [&] {
      const std::vector<std::int32_t> prompt = vocab->encode(tmpl.apply(messages, true), false, true);
      Vocabulary::Printer printer = vocab->printer();
      std::string text;
      const mx::GenerateResult r = mx::generate(model, prompt, opts, [&](std::int32_t id) {
        if (ends_reply(id)) return;
        const std::string piece = printer.push(id);
        text += piece;
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      });
      const std::string rest = printer.flush();
      text += rest;
      std::printf("%s\n", rest.c_str());
      std::fflush(stdout);
      const char* why = r.end == mx::GenerateResult::End::stop_token     ? "end of turn"
                        : r.end == mx::GenerateResult::End::context_full ? "context full"
                                                                         : "max-new reached";
      std::fprintf(stderr, "[%lld prompt tokens, %zu new (%s), %.1f tokens/s]\n", (long long)r.prompt_tokens,
                   r.tokens.size(), why, r.decode_tokens_per_second());
      return text;
    };

    if (!c.messages.empty()) {
      std::ifstream in(c.messages);
      moe::detail::require(in.good(), moe::ErrorCode::bad_file, "--messages: cannot read ", c.messages.string());
      try {
        const nlohmann::json file = nlohmann::json::parse(in);
        for (const nlohmann::json& m : file) messages.push_back(m);
        moe::detail::require(file.is_array(), moe::ErrorCode::invalid_argument, "--messages ", c.messages.string(),
                             ": expected a JSON array of messages");
      } catch (const nlohmann::json::exception& e) {
        throw moe::Error(moe::ErrorCode::bad_file,
                         "--messages " + c.messages.string() + ": not JSON (" + e.what() + ")");
      }
      reply();
      return 0;
    }
    // Interactive: a turn per line of input, until its end or /exit;
    // /reset starts the conversation again.
    const bool tty = ::isatty(STDIN_FILENO) != 0;
    if (tty)
      std::fprintf(stderr, "chat with %s (template: %s); /reset, /exit\n", o.model.string().c_str(),
                   tmpl.origin().c_str());
    std::string line;
    for (;;) {
      if (tty) std::fputs("> ", stderr);
      if (!std::getline(std::cin, line) || line == "/exit") break;
      if (line == "/reset") {
        messages.erase(messages.begin() + (c.system.empty() ? 0 : 1), messages.end());
        continue;
      }
      if (line.empty()) continue;
      messages.push_back({{"role", "user"}, {"content", line}});
      messages.push_back({{"role", "assistant"}, {"content", reply()}});
    }
    return 0;
  });
}

// ---- perplexity ---------------------------------------------------------------------

int perplexity(const RunOptions& o, const fs::path& text_file, std::optional<moe::index_t> context,
               std::optional<moe::index_t> stride) {
  return with_model(o, [&](const auto& model) {
    std::string missing;
    const std::optional<Vocabulary> vocab = open_vocabulary(o.model, missing);
    moe::detail::require(vocab.has_value(), moe::ErrorCode::invalid_argument,
                         "perplexity needs the model's vocabulary: ", missing);
    std::ifstream in(text_file, std::ios::binary);
    moe::detail::require(in.good(), moe::ErrorCode::bad_file, "--text: cannot read ", text_file.string());
    std::ostringstream text;
    text << in.rdbuf();
    const std::vector<std::int32_t> ids = vocab->encode(text.str(), !o.no_bos, false);
    // Default: windows of the model's length (at most 1024), half overlapping.
    mx::PerplexityOptions p;
    p.context = context.value_or(std::min<moe::index_t>(1024, model.config().max_positions));
    p.stride = stride.value_or(std::max<moe::index_t>(1, p.context / 2));
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    const auto t0 = std::chrono::steady_clock::now();
    const mx::PerplexityResult r = mx::perplexity(model, ids, p, [&](const mx::PerplexityResult& now, moe::index_t n) {
      if (!tty) return;
      const int filled = int(30 * now.windows / n);
      std::fprintf(stderr, "\r[%s%s] %lld/%lld windows, perplexity %.4f", std::string(std::size_t(filled), '=').c_str(),
                   std::string(std::size_t(30 - filled), ' ').c_str(), (long long)now.windows, (long long)n,
                   now.perplexity());
    });
    if (tty) std::fprintf(stderr, "\n");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("perplexity %.6f (mean NLL %.6f) over %zu tokens: %lld windows of at most %lld, stride %lld; %.1f s\n",
                r.perplexity(), r.mean_nll(), ids.size(), (long long)r.windows, (long long)p.context,
                (long long)p.stride, seconds);
    return 0;
  });
}

// ---- eval -----------------------------------------------------------------------------

/// Multiple-choice items, one JSON object per line: {"context": "...",
/// "choices": [" a", " b", ...], "gold": 1}. Each choice is scored by its
/// log-likelihood after the context, split into tokens as the harness's HF
/// model splits them (the context's trailing spaces move to the choice; the
/// choice's tokens are those of context + choice past the context's own).
int eval(const RunOptions& o, const fs::path& tasks, const fs::path& out_file) {
  return with_model(o, [&](const auto& model) {
    std::string missing;
    const std::optional<Vocabulary> vocab = open_vocabulary(o.model, missing);
    moe::detail::require(vocab.has_value(), moe::ErrorCode::invalid_argument,
                         "eval needs the model's vocabulary: ", missing);
    std::ifstream in(tasks);
    moe::detail::require(in.good(), moe::ErrorCode::bad_file, "--tasks: cannot read ", tasks.string());
    std::vector<nlohmann::json> items;
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json item;
      try {
        item = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw moe::Error(moe::ErrorCode::bad_file,
                         moe::detail::cat(tasks.string(), ":", number, ": not JSON (", e.what(), ")"));
      }
      const bool ok = item.is_object() && item.contains("context") && item["context"].is_string() &&
                      item.contains("choices") && item["choices"].is_array() && !item["choices"].empty() &&
                      std::all_of(item["choices"].begin(), item["choices"].end(),
                                  [](const nlohmann::json& c) { return c.is_string(); }) &&
                      item.contains("gold") && item["gold"].is_number_integer() &&
                      item["gold"].get<std::int64_t>() >= 0 && item["gold"].get<std::size_t>() < item["choices"].size();
      moe::detail::require(ok, moe::ErrorCode::invalid_argument, tasks.string(), ":", number,
                           ": expected {\"context\": string, \"choices\": [strings], \"gold\": index of a choice}");
      item["line"] = number;
      items.push_back(std::move(item));
    }
    moe::detail::require(!items.empty(), moe::ErrorCode::invalid_argument, "--tasks ", tasks.string(), ": no items");
    std::size_t correct = 0, correct_norm = 0;
    nlohmann::json scores = nlohmann::json::array();
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    for (std::size_t n = 0; n < items.size(); ++n) {
      const nlohmann::json& item = items[n];
      std::string context = item["context"];
      const std::size_t kept = context.find_last_not_of(" \t\n\r\f\v") + 1;
      const std::string moved = context.substr(kept);  // trailing whitespace goes with each choice
      context.resize(kept);
      std::vector<std::int32_t> context_ids = vocab->encode(context, false, false);
      if (context_ids.empty()) context_ids.push_back(vocab->bos >= 0 ? vocab->bos : 0);  // the harness's prefix token
      std::vector<std::vector<std::int32_t>> continuations;
      for (const auto& choice : item["choices"]) {
        const std::vector<std::int32_t> whole =
            vocab->encode(context + moved + choice.get<std::string>(), false, false);
        const std::size_t skip = context.empty() ? 0 : std::min(whole.size(), context_ids.size());
        continuations.emplace_back(whole.begin() + std::ptrdiff_t(skip), whole.end());
        moe::detail::require(!continuations.back().empty(), moe::ErrorCode::invalid_argument, tasks.string(), ":",
                             item["line"].get<int>(), ": a choice with no tokens of its own");
      }
      const std::vector<mx::LogLikelihood> ll = mx::loglikelihoods(model, context_ids, continuations);
      // acc: the most likely choice; acc_norm: the most likely per character.
      std::vector<double> per_char;
      for (std::size_t c = 0; c < ll.size(); ++c)
        per_char.push_back(ll[c].sum / double(std::max<std::size_t>(
                                           1, moe::text::code_points(item["choices"][c].get<std::string>()))));
      const auto best = std::size_t(
          std::max_element(ll.begin(), ll.end(), [](const auto& a, const auto& b) { return a.sum < b.sum; }) -
          ll.begin());
      const auto best_norm = std::size_t(std::max_element(per_char.begin(), per_char.end()) - per_char.begin());
      nlohmann::json item_scores = nlohmann::json::array();
      for (const mx::LogLikelihood& l : ll)
        item_scores.push_back({{"loglikelihood", l.sum}, {"greedy", l.greedy}, {"tokens", l.tokens}});
      const std::size_t gold = item["gold"];
      correct += best == gold;
      correct_norm += best_norm == gold;
      scores.push_back(
          {{"line", item["line"]}, {"choices", item_scores}, {"pred", best}, {"pred_norm", best_norm}, {"gold", gold}});
      if (tty)
        std::fprintf(stderr, "\r%zu/%zu items, accuracy %.4f", n + 1, items.size(), double(correct) / double(n + 1));
    }
    if (tty) std::fprintf(stderr, "\n");
    const double N = double(items.size());
    std::printf("accuracy %.4f (%zu/%zu), acc_norm %.4f (%zu/%zu)\n", double(correct) / N, correct, items.size(),
                double(correct_norm) / N, correct_norm, items.size());
    if (!out_file.empty()) {
      std::ofstream(out_file) << nlohmann::json{{"accuracy", double(correct) / N},
                                                {"acc_norm", double(correct_norm) / N},
                                                {"items", scores}}
                                     .dump(1)
                              << "\n";
      std::printf("wrote %s\n", out_file.string().c_str());
    }
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) try {
  CLI::App app{"moe-mixtral: run Hugging Face Mixtral checkpoints (and dense Mistral/Llama ones) with the moe library"};
  app.require_subcommand(1);

  RunOptions run;
  mx::GenerateOptions gen;
  const auto add_model = [&](CLI::App* cmd) {
    cmd->add_option("--model", run.model, "checkpoint folder (config.json + safetensors) or GGUF file")->required();
    cmd->add_option("--backend", run.backend, "cpu (default) or reference");
    cmd->add_option("--threads", run.threads, "threads for the cpu backend (default: all)");
    cmd->add_option("--isa", run.isa,
                    "instruction set of the cpu kernels: native (default: the best this CPU and build allow) or "
                    "avx2");
    cmd->add_flag("--pack", run.pack,
                  "cpu: pack the experts into panels first (the fast kernel; costs a copy of the expert weights)");
    cmd->add_option("--numerics", run.numerics,
                    "cpu: as-stored (default: weights as stored, fp32 arithmetic) or block-q8 (a GGUF's block "
                    "weights times activations quantised per block, integer dot products: llama.cpp's arithmetic)");
    cmd->add_flag("--no-mmap", run.no_mmap,
                  "read the weights into memory on huge pages instead of reading them through the file's map "
                  "(faster kernels; costs a read of the file and its size in memory)");
  };

  std::string tiny_out, dtype = "bf16", family = "mixtral";
  std::uint64_t tiny_seed = 0;
  int shards = 1;
  bool no_tokenizer = false;
  CLI::App* tiny = app.add_subcommand("make-tiny", "write the built-in tiny Mixtral checkpoint (random weights)");
  tiny->add_option("--out", tiny_out, "folder to write")->required();
  tiny->add_option("--seed", tiny_seed, "weight seed");
  tiny->add_option("--dtype", dtype, "bf16 (default), f32 or f16");
  tiny->add_option("--shards", shards, "number of safetensors shards")->check(CLI::PositiveNumber);
  tiny->add_flag("--no-tokenizer", no_tokenizer, "token ids only (no tokenizer.model)");
  tiny->add_option("--family", family, "mixtral (default), or a dense mistral or llama");

  CLI::App* g = app.add_subcommand("generate", "continue a prompt, streaming the new tokens");
  add_model(g);
  auto* prompt =
      g->add_option("--prompt", run.prompt, "text (needs the model's vocabulary: tokenizer.model or the GGUF's)");
  g->add_option("--tokens", run.tokens, "prompt as token ids: 1,2,3")->excludes(prompt);
  g->add_option("--max-new", gen.max_new_tokens, "tokens to generate")->check(CLI::NonNegativeNumber);
  g->add_option("--temperature", gen.sampling.temperature, "0 = greedy (default)");
  g->add_option("--top-k", gen.sampling.top_k, "sample among the k most likely (0 = all)");
  g->add_option("--top-p", gen.sampling.top_p, "nucleus mass (1 = all)");
  g->add_option("--seed", gen.sampling.seed, "sampling seed");
  g->add_option("--stop", gen.stop_tokens, "stop token ids (default: the config's eos)")->delimiter(',');
  g->add_flag("--no-bos", run.no_bos, "do not put BOS before the prompt text");
  g->add_flag("--special", run.special,
              "read control tokens written in the prompt (a chat template's <s>, <|im_start|> ...) as those tokens");
  g->add_option("--routing-svg", run.routing_svg,
                "draw where each token went (token x layer grid coloured by expert, pairs per expert) as SVG");

  std::string out;
  int greedy = 0;
  CLI::App* l = app.add_subcommand("logits", "write the logits of every position (and a greedy continuation)");
  add_model(l);
  l->add_option("--tokens", run.tokens, "token ids: 1,2,3")->required();
  l->add_option("--out", out,
                "output .safetensors (tensors logits [S, V], greedy_ids [N] and, for a MoE, router_logits [L, S, E])")
      ->required();
  l->add_option("--greedy", greedy, "greedy tokens to decode with the KV cache");

  ChatOptions chat_opts;
  mx::GenerateOptions chat_gen;
  chat_gen.max_new_tokens = 256;
  CLI::App* ch = app.add_subcommand("chat", "talk with the model through its chat template (a turn per line)");
  add_model(ch);
  ch->add_option("--system", chat_opts.system, "a system message to begin with");
  ch->add_option("--messages", chat_opts.messages,
                 "a JSON file of messages ([{\"role\": \"user\", \"content\": \"...\"}, ...]): answer once, exit");
  ch->add_option("--template", chat_opts.template_file, "a chat template (Jinja) in place of the model's");
  ch->add_option("--max-new", chat_gen.max_new_tokens, "most tokens per reply (default 256)")
      ->check(CLI::NonNegativeNumber);
  ch->add_option("--temperature", chat_gen.sampling.temperature, "0 = greedy (default)");
  ch->add_option("--top-k", chat_gen.sampling.top_k, "sample among the k most likely (0 = all)");
  ch->add_option("--top-p", chat_gen.sampling.top_p, "nucleus mass (1 = all)");
  ch->add_option("--seed", chat_gen.sampling.seed, "sampling seed");

  fs::path ppl_text;
  std::optional<moe::index_t> ppl_context, ppl_stride;
  CLI::App* pp = app.add_subcommand("perplexity", "sliding-window perplexity of a text (transformers' recipe)");
  add_model(pp);
  pp->add_option("--text", ppl_text, "the text file to score")->required();
  pp->add_option("--context", ppl_context, "tokens per window (default: the model's positions, at most 1024)");
  pp->add_option("--stride", ppl_stride, "tokens between window starts (default: half the context)");
  pp->add_flag("--no-bos", run.no_bos, "do not put BOS before the text");

  fs::path eval_tasks, eval_out;
  CLI::App* ev = app.add_subcommand("eval", "multiple-choice accuracy by log-likelihood (lm-evaluation-harness style)");
  add_model(ev);
  ev->add_option("--tasks", eval_tasks, "JSON lines: {\"context\": ..., \"choices\": [...], \"gold\": index}")
      ->required();
  ev->add_option("--out", eval_out, "write every item's log-likelihoods and predictions as JSON");

  CLI::App* t = app.add_subcommand("tokenize", "print the token ids of a text in the model's vocabulary");
  t->add_option("--model", run.model, "checkpoint folder or GGUF file")->required();
  t->add_option("--prompt", run.prompt, "text")->required();
  t->add_flag("--no-bos", run.no_bos, "do not put BOS first");
  t->add_flag("--special", run.special, "read control tokens written in the text as those tokens");

  CLI::App* i = app.add_subcommand("info", "check a checkpoint folder and print its config");
  add_model(i);
  bool check_values = false;
  i->add_flag("--check-values", check_values,
              "also read every weight and name the first NaN or infinity (one pass over the checkpoint)");

  CLI11_PARSE(app, argc, argv);
  run.populate =
      g->parsed() || l->parsed() || ch->parsed() || pp->parsed();  // info reads the header (or every page once)
  if (g->parsed()) {
    if (!run.prompt && !run.tokens) throw CLI::RequiredError("--prompt or --tokens");
    return generate(run, gen);
  }
  if (ch->parsed()) return chat(run, chat_gen, chat_opts);
  if (pp->parsed()) return perplexity(run, ppl_text, ppl_context, ppl_stride);
  if (ev->parsed()) return eval(run, eval_tasks, eval_out);
  if (l->parsed()) return logits(run, out, greedy);
  if (t->parsed()) return tokenize(run);
  if (i->parsed()) return info(run, check_values);
  return make_tiny(tiny_out, tiny_seed, dtype, shards, !no_tokenizer, family);
} catch (const CLI::Error& e) {
  std::cerr << "moe-mixtral: " << e.what() << "\n";
  return 2;
} catch (const std::exception& e) {
  std::cerr << "moe-mixtral: " << e.what() << "\n";
  return 1;
}
