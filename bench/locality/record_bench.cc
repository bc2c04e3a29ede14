// mfs_bench_locality — what I/O accounting costs on the /mfs I/O path.
//
// The same workload runs with accounting off and on in one run, alternating
// rounds so that machine noise hits both equally:
//
//   read4k  T threads each pread() 4 KiB blocks of a file in the page cache
//           (the cheapest read /mfs can serve: the local fast path with the
//           data cached; a real FUSE read costs several times more, so the
//           overhead on /mfs is smaller than shown here), and with
//           accounting on, call IoRecorder::Record() once per read, as the
//           client does.
//   record  Record() alone in a tight loop: the absolute cost per call.
//
// Each thread reads 64 blocks of a file on one node, then moves to the next
// node's file (nodes 1, 2, 3 in turn), as a job streaming through files.
//
// The recorder runs as in mount.mfs: its flush thread batches every 500 ms
// (to a sink that counts entries instead of a control socket, so mfsd's
// speed does not enter the measurement). Prints one table; see
// bench/RESULTS.md.
//
//   mfs_bench_locality [--seconds S] [--threads 1,2,4] [--file PATH]
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mfs/locality/recorder.h"

using namespace std::chrono;
using mfs::locality::IoOp;
using mfs::locality::IoRecorder;
using mfs::locality::RecorderOptions;

namespace {

pid_t Tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// Runs `threads` workers for `seconds`; returns operations per second.
double Measure(int threads, double seconds, bool account, bool do_read, int fd, size_t file_size,
               IoRecorder* rec) {
  std::atomic<bool> go{false}, stop{false};
  std::vector<uint64_t> ops(static_cast<size_t>(threads), 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      char buf[4096];
      pid_t tid = Tid();
      uint64_t n = 0;
      uint64_t blocks = file_size / sizeof buf;
      uint64_t x = static_cast<uint64_t>(t) * 7919 + 1;
      while (!go.load(std::memory_order_acquire)) {
      }
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 64; ++i) {
          x = x * 6364136223846793005ULL + 1442695040888963407ULL;
          off_t off = static_cast<off_t>((x >> 33) % blocks) * static_cast<off_t>(sizeof buf);
          ssize_t got = do_read ? ::pread(fd, buf, sizeof buf, off) : 4096;
          // 64 reads of one file, then the next file (nodes 1, 2, 3 in turn).
          if (account) rec->Record(tid, 1 + static_cast<uint32_t>((n / 64) % 3), IoOp::kRead,
                                   static_cast<uint64_t>(got));
        }
        n += 64;
      }
      ops[static_cast<size_t>(t)] = n;
    });
  }
  auto start = steady_clock::now();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  double el = duration<double>(steady_clock::now() - start).count();
  uint64_t total = 0;
  for (auto n : ops) total += n;
  return static_cast<double>(total) / el;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  std::vector<int> threads{1, 2, 4};
  std::string path = "/var/tmp/mfs-bench-locality.dat";
  int rounds = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = atof(argv[++i]);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, atoi(argv[++i]));
    } else if (a == "--threads" && i + 1 < argc) {
      threads.clear();
      std::string s = argv[++i];
      for (size_t p = 0; p < s.size();) {
        size_t q = s.find(',', p);
        threads.push_back(atoi(s.substr(p, q - p).c_str()));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else if (a == "--file" && i + 1 < argc) {
      path = argv[++i];
    } else {
      fprintf(stderr,
              "usage: mfs_bench_locality [--seconds S] [--rounds N] [--threads 1,2,4] [--file P]\n");
      return 2;
    }
  }
  const size_t kSize = 64u << 20;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror(path.c_str());
    return 1;
  }
  std::string chunk(1 << 20, 'x');
  for (size_t off = 0; off < kSize; off += chunk.size()) {
    if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) < 0) {
      perror("pwrite");
      return 1;
    }
  }
  std::atomic<uint64_t> entries{0};
  RecorderOptions o;
  o.flush_interval = milliseconds(500);
  o.sink = [&](const mfs::locality::Batch& b) {
    entries += b.size();
    return mfs::Status::OK();
  };
  IoRecorder rec(o);
  rec.Start();

  printf("mfs_bench_locality: %d round(s) of %.1fs per figure, alternating off/on; median shown\n",
         rounds, seconds);
  printf("%-8s %7s %14s %14s %9s %12s\n", "WORKLOAD", "THREADS", "OFF ops/s", "ON ops/s",
         "OVERHEAD", "ns/Record");
  for (bool do_read : {true, false}) {
    for (int t : threads) {
      std::vector<double> off, on;
      for (int r = 0; r < rounds; ++r) {
        off.push_back(Measure(t, seconds, false, do_read, fd, kSize, &rec));
        on.push_back(Measure(t, seconds, true, do_read, fd, kSize, &rec));
      }
      std::sort(off.begin(), off.end());
      std::sort(on.begin(), on.end());
      double moff = off[off.size() / 2], mon = on[on.size() / 2];
      double overhead = 100.0 * (moff - mon) / moff;
      // Per-call cost from the difference in per-op time, per thread.
      double ns = (1e9 / mon - 1e9 / moff) * t;
      if (!do_read) ns = 1e9 / mon * t;
      printf("%-8s %7d %14.0f %14.0f %8.1f%% %12.1f\n", do_read ? "read4k" : "record", t, moff, mon,
             do_read ? overhead : 0.0, ns);
      fflush(stdout);
    }
  }
  rec.Flush().IgnoreError();
  printf("batches sent %llu, entries %llu, /proc resolutions %llu\n",
         static_cast<unsigned long long>(rec.stats().batches_sent),
         static_cast<unsigned long long>(entries.load()),
         static_cast<unsigned long long>(rec.stats().resolutions));
  ::close(fd);
  ::unlink(path.c_str());
  return 0;
}
