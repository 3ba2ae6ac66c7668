// moe::bpe: moe/text/byte_bpe.hpp compiles and links (PCRE2) through the exported target.
#include <moe/text/byte_bpe.hpp>

#include <cstdio>
#include <string>

int main() {
  // A vocabulary of the 256 byte symbols and one merge: "Ġ" + "a" -> "Ġa".
  moe::text::BpeVocab v;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(moe::text::bpe_detail::byte_chars()[std::size_t(b)]);
  v.tokens.push_back(
      "\xC4\xA0"
      "a");
  v.merges = {"\xC4\xA0 a"};
  const moe::text::BpeTokenizer bpe(v);
  const auto ids = bpe.encode("a a", false);
  const bool ok = ids.size() == 2 && ids[0] == 'a' && ids[1] == 256 && bpe.decode(ids) == "a a";
  std::printf("moe::bpe consumer: %s\n", ok ? "PASSED" : "FAILED");
  return ok ? 0 : 1;
}
