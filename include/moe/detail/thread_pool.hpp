#pragma once
/// \file thread_pool.hpp
/// A small fork-join pool for the CPU backend: parallel_for over task
/// indices, the caller working too. Tasks are claimed from an atomic counter,
/// so which thread runs a task varies from call to call; results do not,
/// because every task writes its own outputs with a fixed arithmetic order.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "moe/core/function_ref.hpp"

namespace moe::detail {

class ThreadPool {
 public:
  /// `threads` in total, the calling thread included (1 = run inline).
  explicit ThreadPool(int threads) : size_(std::max(1, threads)) {
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this, i] { worker(i); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int size() const noexcept { return size_; }

  /// Calls fn(task, thread) for task in [0, n), thread in [0, size()).
  /// Blocks until all tasks are done; rethrows the first exception. Calls
  /// from several threads take turns (one loop at a time per pool); no call
  /// allocates.
  void parallel_for(std::int64_t n, FunctionRef<void(std::int64_t, int)> fn) {
    if (n <= 0) return;
    if (size_ == 1 || n == 1) {
      for (std::int64_t i = 0; i < n; ++i) fn(i, 0);
      return;
    }
    std::lock_guard call_lock(call_mutex_);  // one parallel_for at a time per pool
    {
      std::lock_guard lock(mutex_);
      job_ = &fn;
      tasks_ = n;
      next_.store(0);
      active_ = size_ - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    run_tasks(0);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_tasks(int thread) {
    for (;;) {
      const std::int64_t i = next_.fetch_add(1);
      if (i >= tasks_) return;
      try {
        (*job_)(i, thread);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  void worker(int thread) {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      run_tasks(thread);
      {
        std::lock_guard lock(mutex_);
        if (--active_ == 0) done_.notify_one();
      }
    }
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const FunctionRef<void(std::int64_t, int)>* job_ = nullptr;
  std::int64_t tasks_ = 0;
  std::atomic<std::int64_t> next_{0};
  int active_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

/// The process-wide pool, one thread per hardware thread: what a backend
/// built without a thread count shares with every other such backend.
inline std::shared_ptr<ThreadPool> shared_pool() {
  static const auto pool = std::make_shared<ThreadPool>(int(std::max(1u, std::thread::hardware_concurrency())));
  return pool;
}

}  // namespace moe::detail
