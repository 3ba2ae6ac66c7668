#pragma once
/// \file mapped_file.hpp
/// A read-only memory map of a whole file (POSIX). Checkpoints are mapped,
/// not read: tensors are views into the page cache, and a model costs no
/// copy and no resident memory until its pages are touched.
///
/// The price of a map: the file must stay as it was while it is mapped.
/// Bytes rewritten in place show through the map, and pages cut off by a
/// truncation raise SIGBUS when touched. The map keeps its descriptor, so
/// require_unchanged() can compare size and modification time with those
/// seen at open (one fstat) and throw before anything is read.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "moe/core/error.hpp"

namespace moe::io {

/// What a file that is not a regular one is, for error messages.
inline const char* file_kind(mode_t mode) noexcept {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

/// Throws unless `path` (its symlinks followed: the Hugging Face cache is
/// made of them) is a regular file. Checked before opening, because opening
/// a FIFO for reading blocks until a writer comes.
inline void require_regular_file(const std::filesystem::path& path) {
  struct stat st {};
  detail::require(::stat(path.c_str(), &st) == 0, ErrorCode::bad_file, path.string(), ": cannot open (",
                  std::strerror(errno), ")");
  detail::require(S_ISREG(st.st_mode), ErrorCode::bad_file, path.string(), ": not a regular file (",
                  file_kind(st.st_mode), ")");
}

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path) : path_(path) {
    require_regular_file(path);
    // O_NONBLOCK: should a FIFO take the file's place after the check, open
    // returns at once and fstat below refuses it.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    detail::require(fd >= 0, ErrorCode::bad_file, path.string(), ": cannot open (", std::strerror(errno), ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(ErrorCode::bad_file,
                  detail::cat(path.string(), ": not a regular file (", file_kind(st.st_mode), ")"));
    }
    size_ = std::size_t(st.st_size);
    modified_ = st.st_mtim;
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw Error(ErrorCode::bad_file, detail::cat(path.string(), ": mmap failed (", std::strerror(err), ")"));
      }
      data_ = static_cast<const unsigned char*>(p);
    }
    fd_ = fd;
  }
  MappedFile(MappedFile&& o) noexcept { swap(o); }
  MappedFile& operator=(MappedFile&& o) noexcept {
    MappedFile tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }

  /// Reads every page of the map into memory now (MADV_POPULATE_READ, or a
  /// touch per page on kernels without it), as llama.cpp's MAP_POPULATE
  /// does: a run then meets no page faults, and a timing measures compute.
  void populate() const noexcept {
    if (size_ == 0) return;
    void* p = const_cast<unsigned char*>(data_);
#ifdef MADV_POPULATE_READ
    if (::madvise(p, size_, MADV_POPULATE_READ) == 0) return;
#endif
    (void)::madvise(p, size_, MADV_WILLNEED);
    volatile unsigned char sink = 0;
    for (std::size_t at = 0; at < size_; at += 4096) sink = sink + data_[at];
  }

  /// Throws if the file was truncated, extended or written since it was
  /// opened (its size or modification time moved): the map would show
  /// other bytes, or fault. A change during a read is not caught.
  void require_unchanged() const {
    if (fd_ < 0) return;
    struct stat st {};
    detail::require(::fstat(fd_, &st) == 0, ErrorCode::bad_file, path_.string(), ": cannot stat (",
                    std::strerror(errno), ")");
    detail::require(std::size_t(st.st_size) == size_, ErrorCode::bad_file, path_.string(),
                    ": changed on disk since it was opened (", size_, " bytes then, ", st.st_size,
                    " now); its tensors are read from a map of the file, so load it again");
    detail::require(st.st_mtim.tv_sec == modified_.tv_sec && st.st_mtim.tv_nsec == modified_.tv_nsec,
                    ErrorCode::bad_file, path_.string(),
                    ": changed on disk since it was opened (written to after it was mapped); its tensors are "
                    "read from a map of the file, so load it again");
  }

  const unsigned char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void swap(MappedFile& o) noexcept {
    std::swap(path_, o.path_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(fd_, o.fd_);
    std::swap(modified_, o.modified_);
  }
  std::filesystem::path path_;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;                  // kept open for require_unchanged()
  struct timespec modified_ {};  // st_mtim at open
};

}  // namespace moe::io
