#pragma once
// Shared by the libFuzzer harnesses: each input is written to files (the
// loaders read files, as users hand them files) and loaded. A moe::Error is
// the expected answer to a bad input; anything else escaping (another
// exception, a crash, a sanitizer report, a hang past -timeout) is a finding.

#include <moe/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <unistd.h>

namespace moe::fuzz {

/// A folder of this process's own, on tmpfs where there is one.
inline const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                                           : std::filesystem::temp_directory_path();
    const std::filesystem::path d = base / ("moe-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

/// Splits `input` at the first occurrence of `mark`: (before, after); after is empty without one.
inline std::pair<std::string_view, std::string_view> split(std::string_view input, std::string_view mark) {
  const std::size_t at = input.find(mark);
  if (at == std::string_view::npos) return {input, {}};
  return {input.substr(0, at), input.substr(at + mark.size())};
}

/// Runs `load`; a moe::Error is a clean rejection.
template <class F>
void expect_clean(F&& load) {
  try {
    load();
  } catch (const moe::Error&) {
  }
}

}  // namespace moe::fuzz
