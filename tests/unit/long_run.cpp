// A long generation on a sliding-window model: 10,000 decoded tokens with
// resident memory flat after warm-up (measured from /proc/self/statm), the
// KV cache at its window's size, and the last logits after ~1,700 turns of
// the ring equal to a fresh prefill of the only tokens they can depend on.
#include "test_support.hpp"

#include <moe/models/mixtral.hpp>

#include <fstream>
#include <unistd.h>

using namespace moe;
namespace mx = moe::mixtral;
namespace fs = std::filesystem;

namespace {

// AddressSanitizer keeps freed blocks in a quarantine (up to 256 MiB), so
// resident memory grows under it whatever the code does; the release run
// checks flatness, LeakSanitizer checks leaks.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool rss_meaningful = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool rss_meaningful = false;
#else
constexpr bool rss_meaningful = true;
#endif
#else
constexpr bool rss_meaningful = true;
#endif

/// Resident set size of this process in bytes (Linux).
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  REQUIRE(statm);
  return pages_resident * std::size_t(::sysconf(_SC_PAGESIZE));
}

const fs::path models = fs::path(MOE_TEST_DATA_DIR) / "golden" / "models";

/// mixtral_tiny_sliding_f32 (window 6, 2 layers) with a context long enough
/// for the run, in a scratch folder.
struct LongContextModel {
  fs::path dir = fs::temp_directory_path() / ("moe-long-run-" + std::to_string(::getpid()));
  explicit LongContextModel(index_t context) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path src = models / "mixtral_tiny_sliding_f32";
    fs::copy_file(src / "model.safetensors", dir / "model.safetensors");
    nlohmann::json config = io::read_json(src / "config.json");
    config["max_position_embeddings"] = context;
    std::ofstream(dir / "config.json") << config.dump(2);
  }
  ~LongContextModel() { fs::remove_all(dir); }
};

}  // namespace

TEST_CASE("10,000 decoded tokens: memory flat, cache at its window, last logits exact") {
  constexpr index_t new_tokens = 10000, warm_up = 1000;
  const LongContextModel files(new_tokens + 64);
  const mx::Model<backend::Cpu<>> model(files.dir, backend::Cpu<>(1));
  const mx::Config& c = model.config();
  REQUIRE(c.sliding_window == 6);
  const std::vector<std::int32_t> prompt = {1, 17, 42, 99, 7, 200, 3, 64};

  // Generation as a user runs it, resident memory read every 1,000 tokens.
  std::vector<std::size_t> rss;
  index_t seen = 0;
  const mx::GenerateResult r = mx::generate(model, prompt,
                                            {.max_new_tokens = new_tokens,
                                             .sampling = {.temperature = 1.0f, .seed = 11},
                                             .stop_tokens = {},
                                             .stop_at_eos = false},
                                            [&](std::int32_t) {
                                              if (++seen % warm_up == 0) rss.push_back(resident_bytes());
                                            });
  REQUIRE(r.tokens.size() == std::size_t(new_tokens));
  CHECK(r.end == mx::GenerateResult::End::length);
  REQUIRE(rss.size() == std::size_t(new_tokens / warm_up));
  const std::size_t after_warm_up = rss.front();
  const std::size_t peak = *std::max_element(rss.begin(), rss.end());
  std::string readings;
  for (std::size_t b : rss) readings += std::to_string(b / 1024) + " ";
  MESSAGE("resident KiB every 1,000 tokens: ", readings);
  if (rss_meaningful) {
    // The tokens vector itself grows by 40 KB; a KV cache that kept every
    // position would add 9,000 · 2 layers · 2 · 32 floats = 4.6 MB.
    CHECK(peak - after_warm_up < 1024 * 1024);
  }

  // The same tokens decoded one at a time through the cache: its size must
  // not move once the ring is full, and each step's logits must sample the
  // token generate chose (same seed, same step).
  const mx::SamplingOptions sampling{.temperature = 1.0f, .seed = 11};
  const std::size_t P = prompt.size();
  std::vector<std::int32_t> all(prompt);
  all.insert(all.end(), r.tokens.begin(), r.tokens.end() - 1);
  mx::KvCache cache = model.new_cache();
  Matrix last = model.forward(std::span(all).first(P), cache, mx::Logits::last).logits;
  const auto sampled = [&](std::size_t step) {
    return mx::sample({last.data(), std::size_t(c.vocab_size)}, sampling, std::uint64_t(step));
  };
  index_t differ = sampled(0) != r.tokens[0];
  const std::size_t ring_bytes = cache.bytes();
  CHECK(ring_bytes == std::size_t(c.num_layers * 2 * c.kv_width() * 6) * sizeof(float));
  std::size_t grew_at = 0;
  for (std::size_t i = P; i < all.size(); ++i) {
    last = model.forward(std::span(all).subspan(i, 1), cache, mx::Logits::last).logits;
    differ += sampled(i - P + 1) != r.tokens[i - P + 1];
    if (cache.bytes() != ring_bytes && grew_at == 0) grew_at = i;
  }
  CHECK_MESSAGE(grew_at == 0, "the KV cache grew at position ", grew_at);
  CHECK(differ == 0);
  CHECK(cache.next_position() == index_t(all.size()));

  // With window W over L layers the last logits depend on the last
  // L·(W−1)+1 tokens only, and RoPE scores on relative positions only, so a
  // fresh prefill of those tokens (at positions 0..) gives the same logits
  // up to rounding; one token fewer does not.
  const auto prefill_of_last = [&](index_t n) {
    mx::KvCache fresh = model.new_cache();
    return model.forward(std::span(all).last(std::size_t(n)), fresh, mx::Logits::last).logits;
  };
  const index_t field = c.num_layers * (*c.sliding_window - 1) + 1;
  const Matrix expected = prefill_of_last(field);
  const float scale = std::max(1.0f, expected.cwiseAbs().maxCoeff());
  CHECK(moe::test::max_abs_diff(last, expected) <= 1e-4f * scale);
  CHECK(moe::test::max_abs_diff(prefill_of_last(field + 1), expected) <= 1e-4f * scale);
  CHECK(moe::test::max_abs_diff(prefill_of_last(field - 1), expected) > 1e-3f * scale);
}
