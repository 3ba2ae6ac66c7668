// moe::text: moe/text/sentencepiece.hpp compiles and links through the exported target.
#include <moe/text/sentencepiece.hpp>

#include <cstdio>
#include <string>

int main() {
  try {
    moe::text::SentencePiece sp("no-such-tokenizer.model");
  } catch (const moe::Error& e) {
    const bool named = std::string(e.what()).find("no-such-tokenizer.model") != std::string::npos;
    std::printf("moe::text consumer: %s\n", named ? "PASSED" : "FAILED");
    return named ? 0 : 1;
  }
  std::printf("moe::text consumer: FAILED (a missing file was accepted)\n");
  return 1;
}
