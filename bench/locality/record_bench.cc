// mfs_bench_locality — what I/O accounting costs on the /mfs I/O path.
//
// The same workload runs with accounting off and on in one run, alternating
// every 2048 operations so that machine noise hits both equally:
//
//   read4k  T threads each pread() 4 KiB blocks of a file in the page cache
//           (the cheapest read /mfs can serve: the local fast path with the
//           data cached; a real FUSE read costs several times more, so the
//           overhead on /mfs is smaller than shown here), and with
//           accounting on, call IoRecorder::Record() once per read, as the
//           client does.
//   record  Record() alone in a tight loop: ON - OFF is the absolute cost
//           of one call.
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
#include <time.h>
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

int64_t ThreadCpuNs() {
  timespec ts;
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Figures {
  double off_ns_per_op = 0, on_ns_per_op = 0;  // CPU time per operation
  double off_ops_s = 0, on_ops_s = 0;          // wall-clock throughput
};

// Runs `threads` workers for `seconds`. Each worker alternates blocks of
// 2048 operations with accounting off and on and charges each block's
// thread CPU time (CLOCK_THREAD_CPUTIME_ID) to its mode: on a shared, busy
// machine, CPU time per operation is what accounting adds; wall time mostly
// measures the neighbours.
Figures Measure(int threads, double seconds, bool do_read, int fd, size_t file_size,
                IoRecorder* rec) {
  constexpr int kBlock = 2048;
  std::atomic<bool> go{false}, stop{false};
  struct Acc {
    int64_t ns[2] = {0, 0};
    uint64_t ops[2] = {0, 0};
    double wall[2] = {0, 0};
  };
  std::vector<Acc> acc(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      char buf[4096];
      pid_t tid = Tid();
      uint64_t blocks = file_size / sizeof buf;
      uint64_t x = static_cast<uint64_t>(t) * 7919 + 1;
      uint64_t n = 0;
      Acc& a = acc[static_cast<size_t>(t)];
      while (!go.load(std::memory_order_acquire)) {
      }
      for (int mode = 0; !stop.load(std::memory_order_relaxed); mode ^= 1) {
        bool account = mode == 1;
        auto w0 = steady_clock::now();
        int64_t c0 = ThreadCpuNs();
        for (int i = 0; i < kBlock; ++i, ++n) {
          x = x * 6364136223846793005ULL + 1442695040888963407ULL;
          off_t off = static_cast<off_t>((x >> 33) % blocks) * static_cast<off_t>(sizeof buf);
          ssize_t got = do_read ? ::pread(fd, buf, sizeof buf, off) : 4096;
          // 64 reads of one file, then the next file (nodes 1, 2, 3 in turn).
          if (account) {
            rec->Record(tid, 1 + static_cast<uint32_t>((n / 64) % 3), IoOp::kRead,
                        static_cast<uint64_t>(got));
          }
        }
        a.ns[mode] += ThreadCpuNs() - c0;
        a.wall[mode] += duration<double>(steady_clock::now() - w0).count();
        a.ops[mode] += kBlock;
      }
    });
  }
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  Figures f;
  int64_t ns[2] = {0, 0};
  uint64_t ops[2] = {0, 0};
  double wall[2] = {0, 0};
  for (const Acc& a : acc) {
    for (int m = 0; m < 2; ++m) {
      ns[m] += a.ns[m];
      ops[m] += a.ops[m];
      wall[m] = std::max(wall[m], a.wall[m]);
    }
  }
  f.off_ns_per_op = static_cast<double>(ns[0]) / static_cast<double>(std::max<uint64_t>(1, ops[0]));
  f.on_ns_per_op = static_cast<double>(ns[1]) / static_cast<double>(std::max<uint64_t>(1, ops[1]));
  f.off_ops_s = wall[0] > 0 ? static_cast<double>(ops[0]) / wall[0] : 0;
  f.on_ops_s = wall[1] > 0 ? static_cast<double>(ops[1]) / wall[1] : 0;
  return f;
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
      fprintf(
          stderr,
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

  printf(
      "mfs_bench_locality: %d round(s) of %.1fs, off/on alternating every 2048 ops; "
      "CPU ns per op, median of rounds\n",
      rounds, seconds);
  printf("%-8s %7s %12s %12s %9s %12s %12s\n", "WORKLOAD", "THREADS", "OFF ns/op", "ON ns/op",
         "OVERHEAD", "OFF ops/s", "ON ops/s");
  for (bool do_read : {true, false}) {
    for (int t : threads) {
      std::vector<Figures> runs;
      for (int r = 0; r < rounds; ++r)
        runs.push_back(Measure(t, seconds, do_read, fd, kSize, &rec));
      auto median = [&](auto get) {
        std::vector<double> v;
        for (const auto& f : runs) v.push_back(get(f));
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      double off = median([](const Figures& f) { return f.off_ns_per_op; });
      double on = median([](const Figures& f) { return f.on_ns_per_op; });
      double overhead = median([](const Figures& f) {
        return 100.0 * (f.on_ns_per_op - f.off_ns_per_op) / f.off_ns_per_op;
      });
      char over[32];
      snprintf(over, sizeof over, do_read ? "%.1f%%" : "-", overhead);
      printf("%-8s %7d %12.1f %12.1f %9s %12.0f %12.0f\n", do_read ? "read4k" : "record", t, off,
             on, over, median([](const Figures& f) { return f.off_ops_s; }),
             median([](const Figures& f) { return f.on_ops_s; }));
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
