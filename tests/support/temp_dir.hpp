#pragma once
// A scratch folder for a test: fresh on construction, removed with its
// contents at scope exit; the process id in its name keeps parallel test
// runs apart.

#include <filesystem>
#include <string>

#include <unistd.h>

namespace moe::test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("moe-test-" + std::to_string(::getpid()) + "-" + name)) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace moe::test
