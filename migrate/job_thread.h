// JobThread: one worker thread that runs posted jobs in order.
//
// The supervisors use it to overlap page work with their io thread: the
// guest writes received page batches into the new process on one while the
// next batch arrives; the home reads and hashes part of a batch on one while
// its io thread does the rest. Drain() returns once every job posted so far
// has run: call it before touching what a job uses. Post and Drain may be
// called from any thread; the destructor drains and joins.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace mfs::migrate {

class JobThread {
 public:
  JobThread() : thread_([this] { Run(); }) {}
  ~JobThread() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  JobThread(const JobThread&) = delete;
  JobThread& operator=(const JobThread&) = delete;

  void Post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> l(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
  }
  // Returns once every posted job has run.
  void Drain() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return jobs_.empty() && !busy_; });
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stop_
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      busy_ = true;
      l.unlock();
      job();
      job = nullptr;  // its captures go before Drain() returns
      l.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace mfs::migrate
