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

#include <algorithm>
#include <cerrno>
#include <cstdint>
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
      void* p = map_aligned(fd);
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

  /// Replaces the map's pages by a private copy of the file in anonymous
  /// memory at the same addresses (so every view into the map stays
  /// valid), advised for transparent huge pages: llama.cpp's --no-mmap. A
  /// kernel streaming weights from page-cache pages takes a TLB miss every
  /// 4 KiB and its prefetchers stop at each page's end; on 2 MiB pages it
  /// does neither. Costs a read of the whole file and its size in resident
  /// memory (the page cache keeps its copy until it needs the room).
  void read_into_memory() const {
    if (size_ == 0 || copied_) return;
    void* at = const_cast<unsigned char*>(data_);
    void* p = ::mmap(at, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    detail::require(p == at, ErrorCode::bad_file, path_.string(), ": cannot allocate ", size_,
                    " bytes to read it into (", std::strerror(errno), ")");
#ifdef MADV_HUGEPAGE
    (void)::madvise(p, size_, MADV_HUGEPAGE);
#endif
    for (std::size_t done = 0; done < size_;) {
      const ssize_t n = ::pread(fd_, static_cast<unsigned char*>(p) + done,
                                std::min<std::size_t>(size_ - done, 1 << 30), off_t(done));
      if (n < 0 && errno == EINTR) continue;
      detail::require(n > 0, ErrorCode::bad_file, path_.string(), ": read failed at byte ", done, " of ", size_, " (",
                      n < 0 ? std::strerror(errno) : "end of file", ")");
      done += std::size_t(n);
    }
    (void)::mprotect(p, size_, PROT_READ);
    copied_ = true;
  }

  /// Throws if the file was truncated, extended or written since it was
  /// opened (its size or modification time moved): the map would show
  /// other bytes, or fault. A change during a read is not caught.
  void require_unchanged() const {
    if (fd_ < 0 || copied_) return;  // a copy in memory shows no later change
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
    std::swap(copied_, o.copied_);
  }

  /// The file mapped at a 2 MiB boundary (read_into_memory's huge pages
  /// need their virtual addresses aligned): an address range reserved with
  /// room to spare, the file mapped over its aligned part, the rest freed.
  void* map_aligned(int fd) const noexcept {
    constexpr std::size_t huge = std::size_t(2) << 20;
    if (size_ < huge) return ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    void* reserved = ::mmap(nullptr, size_ + huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reserved == MAP_FAILED) return ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    auto* base = static_cast<unsigned char*>(reserved);
    unsigned char* aligned = base + (huge - reinterpret_cast<std::uintptr_t>(base) % huge) % huge;
    void* p = ::mmap(aligned, size_, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
      ::munmap(reserved, size_ + huge);
      return MAP_FAILED;
    }
    const std::size_t page = std::size_t(::sysconf(_SC_PAGESIZE));
    const std::size_t mapped_end = (size_ + page - 1) / page * page;  // the map covers whole pages
    if (aligned > base) ::munmap(base, std::size_t(aligned - base));
    if (base + size_ + huge > aligned + mapped_end)
      ::munmap(aligned + mapped_end, std::size_t(base + size_ + huge - (aligned + mapped_end)));
    return p;
  }
  std::filesystem::path path_;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;                  // kept open for require_unchanged()
  struct timespec modified_ {};  // st_mtim at open
  mutable bool copied_ = false;  // read_into_memory ran: anonymous pages, not the file's (same bytes)
};

}  // namespace moe::io
