// 12: A frankenMoE: four dense models become one Mixtral, and where its
// tokens go.
//
// A frankenMoE (mergekit-moe; Beyonder-4x7B and many others) is a Mixtral
// assembled from dense models that share a base: attention, norms and
// embeddings come from the base, expert e of every layer is the FFN of model
// e, and each layer gets a router. Nothing is trained: the router rows are
// made from prompts that say what each expert is for. In the "hidden" mode,
// expert e's row in layer l is the direction of the residual stream entering
// layer l at the last token of e's prompts (averaged over them, normalised):
// a token whose stream points the same way scores high for e.
//
// Here the four dense models are tiny and random (four seeds of one
// Mistral shape), and the tokenizer is a word list, so the whole lesson runs
// in a second; moe-merge does the same with real 7B folders, a YAML config
// and the base's tokenizer.model. Steps:
//   1. four dense Mistral models, and a merge config with the seed
//      article's prompts (chat, code, stories, maths; five each)
//   2. merge: the router rows come from the base model run on the prompts
//   3. which experts each prompt's tokens go to, in every layer
//   4. the premise, and how far the router follows it: scored on the stream
//      the rows were made from, each prompt's last token points to its own
//      expert; the router, which sees that stream after attention and a
//      norm, follows only loosely
//   5. sparse upcycling: four copies of the base give the base's own output
//
//   ./12_build_a_frankenmoe
#include <moe/merge/merge.hpp>
#include <moe/models/mixtral.hpp>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "../check.hpp"

namespace fs = std::filesystem;
namespace mg = moe::merge;
namespace mx = moe::mixtral;

namespace {

// A word-level tokenizer: BOS = 1, then one id per known word. Any
// function from a prompt to ids will do (moe-merge uses the base's
// tokenizer.model, as mergekit does).
const std::vector<std::string> words = {
    "chat",      "assistant",  "tell",        "me",          "explain",      "I",      "want",  "code",
    "python",    "javascript", "programming", "algorithm",   "storywriting", "write",  "scene", "story",
    "character", "reason",     "math",        "mathematics", "solve",        "count",  "a",     "the",
    "about",     "in",         "sort",        "list",        "hero",         "numbers"};

std::vector<std::int32_t> tokenize(const std::string& text) {
  std::vector<std::int32_t> ids{1};
  std::istringstream in(text);
  for (std::string w; in >> w;)
    for (std::size_t i = 0; i < words.size(); ++i)
      if (words[i] == w) ids.push_back(std::int32_t(3 + i));
  return ids;
}

mx::Config dense_mistral() {
  mx::Config c;
  c.family = mx::Family::mistral;
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.num_experts = c.experts_per_token = 1;  // dense: one FFN per layer
  c.max_positions = 64;
  c.rope_theta = 10000;
  c.dtype = moe::DType::F32;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

const char* expert_names[] = {"chat", "code", "story", "math"};

}  // namespace

int main() {
  const fs::path dir = fs::temp_directory_path() / ("moe-example-12-" + std::to_string(::getpid()));
  fs::remove_all(dir);

  // 1. Four dense models: seed 1 is the base and the chat expert.
  std::vector<std::string> models;
  for (int seed = 1; seed <= 4; ++seed) {
    models.push_back((dir / ("dense" + std::to_string(seed))).string());
    mx::write_random_checkpoint(models.back(), dense_mistral(), std::uint64_t(seed));
  }
  mg::MergeConfig config;  // what a mergekit-moe YAML file says
  config.base_model = models[0];
  config.gate_mode = mg::GateMode::hidden;
  config.experts_per_token = 2;
  const std::vector<std::vector<std::string>> prompts = {{"chat", "assistant", "tell me", "explain", "I want"},
                                                         {"code", "python", "javascript", "programming", "algorithm"},
                                                         {"storywriting", "write", "scene", "story", "character"},
                                                         {"reason", "math", "mathematics", "solve", "count"}};
  for (std::size_t e = 0; e < 4; ++e) {
    mg::ExpertSource x;
    x.source_model = models[e];
    x.positive_prompts = prompts[e];
    config.experts.push_back(x);
  }

  // 2. The merge, streamed tensor by tensor into a Mixtral folder.
  mg::MergeOptions options;
  options.tokenizer.encode = tokenize;
  options.tokenizer.pad_id = 1;
  const mg::MergeReport report = mg::merge(config, dir / "frankenmoe", options);
  std::printf("merged: %lld layers, %lld experts, %.2f MB; router condition numbers:", (long long)report.layers,
              (long long)report.experts, double(report.bytes) / 1e6);
  for (double k : report.gate_condition) std::printf(" %.2f", k);
  std::printf("\n\n");
  const mx::Model<moe::backend::Reference> moe_model(dir / "frankenmoe");

  // 3. Where each token goes: the two experts the router picks, per layer.
  const auto route = [&](const std::string& text) {
    mx::KvCache cache = moe_model.new_cache();
    return moe_model.forward(tokenize(text), cache, mx::Logits::last).routing;
  };
  for (const std::string text : {"tell me a story about a hero", "sort a list in python", "solve the numbers"}) {
    const std::vector<moe::Routing> r = route(text);
    std::printf("\"%s\"\n  %-10s", text.c_str(), "token");
    for (std::size_t l = 0; l < r.size(); ++l) std::printf("  layer %zu      ", l);
    std::istringstream in("<s> " + text);
    std::string word;
    for (moe::index_t t = 0; in >> word; ++t) {
      std::printf("\n  %-10s", word.c_str());
      for (const moe::Routing& layer : r)
        std::printf("  %-5s + %-5s", expert_names[layer.expert_at(t, 0)], expert_names[layer.expert_at(t, 1)]);
    }
    std::printf("\n\n");
  }

  // 4. Row e of layer l is the mean direction of e's prompts' streams
  // entering layer l. Scored against that same stream, each prompt's last
  // token should point to its own expert: the method's premise. The router
  // itself sees the stream after the layer's attention and a norm, so its
  // real choice follows the prompts only loosely: a heuristic, which is why
  // frankenMoEs are usually fine-tuned after the merge.
  std::vector<int> premise(std::size_t(report.layers), 0), router(std::size_t(report.layers), 0);
  int total = 0;
  for (std::size_t e = 0; e < 4; ++e)
    for (const std::string& p : prompts[e]) {
      mx::KvCache cache = moe_model.new_cache();
      mx::Trace trace;
      const std::vector<std::int32_t> ids = tokenize(p);
      const mx::StepOutput out = moe_model.forward(ids, cache, mx::Logits::last, &trace);
      const moe::index_t last = moe::index_t(ids.size()) - 1;
      for (moe::index_t l = 0; l < report.layers; ++l) {
        const moe::Matrix& stream = l == 0 ? trace.embeddings : trace.layers[std::size_t(l - 1)].hidden_out;
        const moe::WeightMatrix& gate = moe_model.weights().layers[std::size_t(l)].moe.router.gate;
        int best = 0;
        double best_score = -1e30;
        for (moe::index_t x = 0; x < 4; ++x) {
          double score = 0;
          for (moe::index_t h = 0; h < gate.cols; ++h) score += double(gate.at(x, h)) * stream(last, h);
          if (score > best_score) best_score = score, best = int(x);
        }
        premise[std::size_t(l)] += best == int(e);
        router[std::size_t(l)] += out.routing[std::size_t(l)].expert_at(last, 0) == std::int32_t(e);
      }
      ++total;
    }
  std::printf("prompts whose last token goes first to its own expert (of %d; chance is 1 in 4):\n", total);
  for (std::size_t l = 0; l < premise.size(); ++l)
    std::printf("  layer %zu: %2d scored on the stream the rows came from, %2d by the router itself\n", l, premise[l],
                router[l]);
  std::printf("\n");
  bool holds = true;
  for (int n : premise) holds = holds && n >= total * 3 / 4;
  example::expect(holds, "on the stream they were made from, the rows send 3 in 4 prompts to their own expert");

  // 5. Sparse upcycling (--i-understand-this-is-not-useful-without-
  // training): four copies of the base. Whatever the router picks, the
  // weights of the two chosen experts sum to 1 and both compute the same
  // FFN, so the Mixtral computes the dense model, up to rounding.
  mg::MergeConfig copies = config;
  for (mg::ExpertSource& x : copies.experts) x.source_model = models[0];
  mg::MergeOptions allow = options;
  allow.validate.allow_identical_models = true;
  mg::merge(copies, dir / "upcycled", allow);
  const mx::Model<moe::backend::Reference> upcycled(dir / "upcycled"), dense(models[0]);
  const std::vector<std::int32_t> ids = tokenize("write code about the hero");
  mx::KvCache c1 = upcycled.new_cache(), c2 = dense.new_cache();
  const moe::Matrix a = upcycled.forward(ids, c1).logits, b = dense.forward(ids, c2).logits;
  const double diff = (a - b).cwiseAbs().maxCoeff();
  std::printf("upcycled (4 copies of the base) vs the dense base: logits differ by at most %.1e\n", diff);
  example::expect(diff < 1e-4, "four copies of one FFN compute that FFN");
  example::expect(report.experts == 4 && report.layers == 3, "the merge has four experts in each of three layers");

  fs::remove_all(dir);
  return example::verdict();
}
